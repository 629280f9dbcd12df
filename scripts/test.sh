#!/usr/bin/env bash
# Run the whole test suite: unit, codec (with fuzzing), kernel (real BPF).
# Kernel tests need root; with NODEMESH_REQUIRE_KERNEL=1 a missing capability
# fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider "$@"
