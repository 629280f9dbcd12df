#!/bin/sh
# Build and run the libFuzzer target of one codec, or of the batch id
# rewrite (native/mux.c) with PROTO=mux, or of the ordered lean path
# (native/ordered.c, CPython embedded; PYTHON must be the venv's) with PROTO=ordered.
#   native/fuzz/run.sh PROTO SECONDS      (SECONDS=0: replay the seeds only)
# Builds into $FUZZ_OUT (default native/fuzz/out/PROTO), seeds from
# native/fuzz/corpus/PROTO plus ../shared/realworld when present (seeds.py;
# for mux: a few valid runs of each id encoding),
# keeps new inputs in $FUZZ_OUT/corpus and a crash as $FUZZ_OUT/crash-*.
# Prints one summary line; exits non-zero on a finding.
# Environment: CC (default clang-14, else clang), PYTHON (default python3).
set -eu
PROTO=${1:?usage: run.sh PROTO SECONDS}
SECONDS_=${2:?usage: run.sh PROTO SECONDS}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FUZZ_OUT:-$HERE/out/$PROTO}
PYTHON=${PYTHON:-python3}
CC=${CC:-$(command -v clang-14 || command -v clang || echo clang-14)}
case $PROTO in
    dubbo|thrift|redis|http1|lengthfield) HARNESS=fuzz_codec.c MAXLEN=65536 ;;
    mux) HARNESS=fuzz_mux.c MAXLEN=4096 ;;
    ordered) HARNESS=fuzz_ordered.c MAXLEN=256 ;;
    *) echo "run.sh: unknown target $PROTO" >&2; exit 2 ;;
esac
UPPER=$(echo "$PROTO" | tr a-z A-Z)
mkdir -p "$OUT/corpus" "$OUT/seeds"
rm -f "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-*

# The codec sources, as native/build_codec.py lists them; mux: native/mux.c alone.
SOURCES=$("$PYTHON" - "$ROOT/native/build_codec.py" <<'PY'
import ast, re, sys
text = open(sys.argv[1]).read()
print(" ".join(ast.literal_eval(re.search(r"^SOURCES = (\[.*?\])", text, re.M | re.S).group(1))))
PY
)
SRC=""
for s in $SOURCES; do SRC="$SRC $ROOT/native/$s"; done
[ "$PROTO" = mux ] && SRC="$ROOT/native/mux.c"
EXTRA=""
if [ "$PROTO" = ordered ]; then
    # ordered.c works on the proxy's Python objects: the harness embeds the interpreter
    SRC=""
    for s in ordered.c ordered_send.c ordered_reply.c ordered_read.c; do SRC="$SRC $ROOT/native/$s"; done
    PYINC=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    PYLIB=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    EXTRA="-I$PYINC -L$PYLIB -lpython$PYVER -Wl,-rpath,$PYLIB"
    export NODEMESH_FUZZ_ROOT="$ROOT"
    NODEMESH_FUZZ_SITE=$("$PYTHON" -c 'import site; print(site.getsitepackages()[0])')
    export NODEMESH_FUZZ_SITE
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}   # the interpreter's own at exit
fi

# Rebuild only when a source is newer than the binary.
STALE=1
if [ -x "$OUT/fuzz_$PROTO" ] && [ -z "$(find "$HERE/$HARNESS" "$ROOT/native" -maxdepth 1 \
        -name '*.[ch]' -newer "$OUT/fuzz_$PROTO" 2>/dev/null)" ]; then
    STALE=0
fi
[ "$STALE" = 0 ] || "$CC" -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -I"$ROOT/native" -DFUZZ_PROTOCOL="NM_PROTO_$UPPER" \
    "$HERE/$HARNESS" $SRC $EXTRA -o "$OUT/fuzz_$PROTO"

rm -rf "$OUT/seeds" && mkdir -p "$OUT/seeds"
if [ "$PROTO" = ordered ]; then
    # codec, options, 2 replies, then steps (fuzz_ordered_driver.py): round trips, a
    # pipelined send answered in pieces, a timeout, a client gone
    for codec in 0 1; do
        for opts in 0 2 3 30 66 127; do
            printf "\\$(printf %03o $codec)\\$(printf %03o $opts)\\001\\000\\002\\000\\000\\000\\000\\001\\000\\002\\101\\005\\003\\000\\201\\005\\000\\007\\006\\000\\000\\001\\002\\000\\007\\001\\000" \
                > "$OUT/seeds/seed-$codec-$opts"
        done
    done
elif [ "$PROTO" = mux ]; then
    # encoding, 2 frames of 16 bytes (id at 4, 8 bytes / at 2, 1 byte), ids
    for enc in 0 1 2; do
        printf "\\$(printf %03o $enc)\\002\\020\\000\\004\\000\\010\\000AAAAAAAAAAAAAAAA\\020\\000\\002\\000\\001\\000BBBBBBBBBBBBBBBB\\001\\000\\000\\000\\000\\000\\000\\000\\177\\000\\000\\000\\000\\000\\000\\000" \
            > "$OUT/seeds/seed-$enc"
    done
else
    (cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON" "$HERE/seeds.py" "$PROTO" "$OUT/seeds") >/dev/null
fi

if [ "$SECONDS_" = 0 ]; then
    MODE="-runs=0"
else
    MODE="-max_total_time=$SECONDS_"
fi
set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$OUT/fuzz_$PROTO" $MODE -max_len=$MAXLEN \
    -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="$OUT/" \
    "$OUT/corpus" "$OUT/seeds" >"$OUT/log" 2>&1
RC=$?
set -e
EXECS=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/log" | tail -1)
COV=$(grep -o 'cov: [0-9]*' "$OUT/log" | tail -1 | cut -d' ' -f2)
NSEEDS=$(ls "$OUT/seeds" | wc -l)
CRASH=$(ls "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-* 2>/dev/null | head -1 || true)
if [ "$RC" -ne 0 ] || [ -n "$CRASH" ]; then
    echo "fuzz $PROTO: FINDING after ${EXECS:-?} execs (rc $RC): ${CRASH:-see $OUT/log}"
    exit 1
fi
echo "fuzz $PROTO: ok, ${SECONDS_}s, ${EXECS:-0} execs, cov ${COV:-?}, $NSEEDS seeds, corpus $(ls "$OUT/corpus" | wc -l)"
