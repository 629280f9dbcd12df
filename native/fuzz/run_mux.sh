#!/bin/sh
# Build and run the libFuzzer target of native/mux.c (the batch id rewrite).
#   native/fuzz/run_mux.sh SECONDS      (SECONDS=0: replay the seeds only)
# Builds into $FUZZ_OUT (default native/fuzz/out/mux); seeds are written here
# (a few valid runs of each encoding); prints one summary line; exits
# non-zero on a finding. Environment: CC (default clang-14, else clang).
set -eu
SECONDS_=${1:?usage: run_mux.sh SECONDS}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FUZZ_OUT:-$HERE/out/mux}
CC=${CC:-$(command -v clang-14 || command -v clang || echo clang-14)}
mkdir -p "$OUT/corpus"
rm -rf "$OUT/seeds" "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-*
mkdir -p "$OUT/seeds"
if [ ! -x "$OUT/fuzz_mux" ] || [ -n "$(find "$HERE/fuzz_mux.c" "$ROOT/native/mux.c" \
        "$ROOT/native/mux.h" -newer "$OUT/fuzz_mux" 2>/dev/null)" ]; then
    "$CC" -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -fno-omit-frame-pointer -I"$ROOT/native" "$HERE/fuzz_mux.c" "$ROOT/native/mux.c" \
        -o "$OUT/fuzz_mux"
fi
# seeds: encoding, 2 frames of 16 bytes (id at 4, 8 bytes / at 2, 1 byte), ids
for enc in 0 1 2; do
    printf "\\$(printf %03o $enc)\\002\\020\\000\\004\\000\\010\\000AAAAAAAAAAAAAAAA\\020\\000\\002\\000\\001\\000BBBBBBBBBBBBBBBB\\001\\000\\000\\000\\000\\000\\000\\000\\177\\000\\000\\000\\000\\000\\000\\000" \
        > "$OUT/seeds/seed-$enc"
done
if [ "$SECONDS_" = 0 ]; then MODE="-runs=0"; else MODE="-max_total_time=$SECONDS_"; fi
set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$OUT/fuzz_mux" $MODE -max_len=4096 \
    -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="$OUT/" \
    "$OUT/corpus" "$OUT/seeds" >"$OUT/log" 2>&1
RC=$?
set -e
EXECS=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/log" | tail -1)
COV=$(grep -o 'cov: [0-9]*' "$OUT/log" | tail -1 | cut -d' ' -f2)
CRASH=$(ls "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-* 2>/dev/null | head -1 || true)
if [ "$RC" -ne 0 ] || [ -n "$CRASH" ]; then
    echo "fuzz mux: FINDING after ${EXECS:-?} execs (rc $RC): ${CRASH:-see $OUT/log}"
    exit 1
fi
echo "fuzz mux: ok, ${SECONDS_}s, ${EXECS:-0} execs, cov ${COV:-?}, corpus $(ls "$OUT/corpus" | wc -l)"
