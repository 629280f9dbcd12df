#!/usr/bin/env bash
# Regenerate agent/config/protos/**/*_pb2.py from the .proto files next to them.
#
# The Envoy/xDS types they import come from the installed xds-protos package,
# which ships compiled descriptors but no .proto sources: a small Python step
# writes those descriptors to a FileDescriptorSet and protoc reads imports
# from it (--descriptor_set_in). Usage: scripts/gen_protos.sh [OUTPUT_ROOT]
# (default: the repository root; tests regenerate into a temporary root and
# compare with the committed files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-.}
mkdir -p "$OUT"
DEPS=$(mktemp)
trap 'rm -f "$DEPS"' EXIT

"$PY" - "$DEPS" <<'EOF'
import importlib
import sys

from google.protobuf import descriptor_pb2, descriptor_pool

# The modules whose .proto files ours import; their own imports follow.
MODULES = [
    "envoy.config.core.v3.base_pb2",
    "envoy.config.core.v3.config_source_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.config.accesslog.v3.accesslog_pb2",
    "envoy.config.trace.v3.http_tracer_pb2",
    "envoy.type.v3.percent_pb2",
    "envoy.type.v3.token_bucket_pb2",
    "google.protobuf.struct_pb2",
]
for name in MODULES:
    importlib.import_module(name)
pool = descriptor_pool.Default()
out, seen = descriptor_pb2.FileDescriptorSet(), set()


def add(fd):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        add(dep)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    out.file.append(proto)


for name in MODULES:
    add(pool.FindFileByName(importlib.import_module(name).DESCRIPTOR.name))
with open(sys.argv[1], "wb") as fh:
    fh.write(out.SerializeToString())
EOF

"$PY" -m grpc_tools.protoc --descriptor_set_in="$DEPS" -I. --python_out="$OUT" \
  agent/config/protos/nodemesh.proto \
  agent/config/protos/aeraki/route.proto \
  agent/config/protos/aeraki/meta_protocol_proxy.proto \
  agent/config/protos/aeraki/local_ratelimit.proto
