#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for nodemesh (as root): the system packages
# the datapath, the tests and the demo use, and a virtual environment at .venv
# that can import Debian's bcc, with nodemesh installed in it.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential     # venv + cffi build
  python3-bpfcc bpfcc-tools libbpf1 bpftool            # the datapath loader
  linux-headers-amd64                                  # kernel headers for bcc
  clang llvm libclang-rt-14-dev                        # libFuzzer, sanitizers
  iproute2 iptables procps psmisc curl                 # namespaces, peers
  redis-server redis-tools nutcracker haproxy wrk      # real servers and load
  linux-perf                                           # bench/proxy_*: CPU and syscall profiles
  zsh                                                  # `nodemesh completion zsh` tests
)

need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages (${need_apt[*]}): run as root" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Node.js runs hessian.js, the independent hessian2 encoder of the Dubbo tests.
if ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -d tests/codec/hessianjs/node_modules ]; then
  npm ci --prefix tests/codec/hessianjs --silent --no-audit --no-fund >/dev/null
fi
# kubectl builds deploy/daemonset (tests/k8s). Keep the machine's if it has one;
# else Debian's kubernetes-client. Debian 12's kubectl (1.20) is also unpacked
# beside the venv, not installed (its /usr/bin/kubectl clashes with a newer
# kubectl package), so the tests check that both build the same objects.
if ! command -v kubectl >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
if [ ! -x .venv-tools/kubernetes-client/usr/bin/kubectl ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq kubernetes-client >/dev/null 2>&1) || true
  if ls "$tmp"/kubernetes-client_*.deb >/dev/null 2>&1; then
    mkdir -p .venv-tools/kubernetes-client
    dpkg -x "$tmp"/kubernetes-client_*.deb .venv-tools/kubernetes-client
  fi
  rm -rf "$tmp"
fi
# checkov, the offline security lint of the manifests, in its own venv: it pins
# older packaging/python-dateutil than the project's dependencies accept.
if [ ! -x .venv-lint/bin/checkov ]; then
  "${PY:-/usr/bin/python3}" -m venv .venv-lint
  .venv-lint/bin/pip install -q "checkov==3.3.30"
fi
# The services the tests start themselves must not also run as system daemons.
for svc in redis-server nutcracker haproxy; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

# Debian's python3 is the one bcc is built for.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.nodemesh-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip wheel setuptools cffi
  .venv/bin/pip install -q -e ".[test]" --no-build-isolation
  touch "$stamp"
else
  # sources may have changed: rebuild the codec extension in place (fast)
  .venv/bin/python native/build_codec.py >/dev/null
fi
.venv/bin/python - <<'PY'
from agent.bpf.bcc_import import import_bcc
import agent.codec
print("setup: bcc", import_bcc().__version__ if hasattr(import_bcc(), "__version__") else "ok",
      "| codecs", ", ".join(agent.codec.PROTOCOLS))
PY
