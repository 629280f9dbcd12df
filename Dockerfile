# nodemesh image: the agent, the proxy (local and remote roles) and the CLI.
# Debian 12 so that bcc is Debian's python3-bpfcc, as on the test machines.
#   docker build -t nodemesh/nodemesh:0.1.0 .

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev build-essential libffi-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY agent/ agent/
COPY bpf/ bpf/
COPY native/ native/
# The wheel carries the compiled C codecs (native/build_codec.py, via setup.py)
# and the eBPF sources (compiled on the node at load time).
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels .

FROM debian:bookworm-slim
# python3-bpfcc: bcc for loading the datapath; libbpf1: pins, maps and links
# without a compiler; bpftool and iproute2: node diagnostics (nodemesh doctor).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-bpfcc libbpf1 bpftool iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# --system-site-packages: Debian's bcc lives in the system Python.
RUN python3 -m venv --system-site-packages /opt/nodemesh \
 && /opt/nodemesh/bin/pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && /opt/nodemesh/bin/nodemesh version
ENV PATH=/opt/nodemesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default (the remote pool runs so); the DaemonSet runs the agent
# and the local proxy as root with named capabilities (deploy/daemonset/).
RUN useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin nodemesh
USER 65532
# Kubernetes ignores HEALTHCHECK; the manifests' probes ask the admin API.
# checkov:skip=CKV_DOCKER_2: health is checked by the Kubernetes probes in deploy/
ENTRYPOINT []
CMD ["nodemesh", "--help"]
