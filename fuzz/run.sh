#!/bin/sh
# Build a libFuzzer target of facevec's C code and run it under ASan + UBSan.
#
#   fuzz/run.sh [TARGET] [RUNS] [SECONDS] [MIN_RUNS]
#
# TARGET  sql      fuzz_sql_functions.c: every SQL function, facevec_knn's
#                  arguments and the kernels on fuzzed bytes (the default);
#         gallery  fuzz_gallery_file.c: a damaged or hostile gallery file,
#                  mutated from the seeds in fuzz/gallery_seeds/ (its bytes,
#                  and forged values written through SQL).
# The run stops after RUNS inputs or SECONDS seconds, whichever comes first
# (defaults: sql 1000000 inputs / 90 s, gallery no limit / 60 s). It fails on
# a crash, a sanitizer report, or fewer than MIN_RUNS inputs (a run that did
# not really run; defaults: sql 100000, gallery 1000). The crashing input is
# left in fuzz/build/<target>/.
#
# Needs clang with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev)
# and libsqlite3 (apt-get install libsqlite3-dev).
set -eu
cd "$(dirname "$0")/.."
TARGET=${1:-sql}
case "$TARGET" in
  sql) SOURCE=fuzz/fuzz_sql_functions.c; D_RUNS=1000000; D_SECONDS=90; D_MIN=100000; MAX_LEN=1024 ;;
  gallery) SOURCE=fuzz/fuzz_gallery_file.c; D_RUNS=-1; D_SECONDS=60; D_MIN=1000; MAX_LEN=65536 ;;
  *) echo "usage: fuzz/run.sh [sql|gallery] [RUNS] [SECONDS] [MIN_RUNS]" >&2; exit 2 ;;
esac
RUNS=${2:-$D_RUNS}
SECONDS_MAX=${3:-$D_SECONDS}
MIN_RUNS=${4:-$D_MIN}
CC=${CC:-clang}
BUILD=fuzz/build/$TARGET
rm -rf "$BUILD/corpus"  # start from the seeds: a run takes the same time everywhere
mkdir -p "$BUILD/corpus"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' facevec/_version.py)

# -DSQLITE_CORE: the extension calls the linked libsqlite3 directly.
"$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=all -DSQLITE_CORE "-DFACEVEC_VERSION=\"$VERSION\"" -Wall -Wextra \
  -Icsrc -Icsrc/sqlite \
  "$SOURCE" csrc/*.c \
  -lsqlite3 -lm -o "$BUILD/fuzzer"

if [ "$TARGET" = sql ]; then
  # Seeds: a valid vector pair for each statement, as BLOB, TEXT JSON and floats-as-JSON.
  python3 - "$BUILD/corpus" <<'PY'
import struct, sys
out = sys.argv[1]
vec = struct.pack("<4f", 1.0, -2.0, 3.5, 0.25)
for stmt in range(20):
    for types in (0o00, 0o11, 0o55, 0o05, 0o66, 0o24, 0o77):
        for scalar in (0, 64):
            args = [vec + vec, b"[1, 2.5, -3e-2, 4]" * 2]
            body = args[0] if types in (0o00, 0o66, 0o05, 0o55, 0o77) else args[1]
            with open(f"{out}/seed-{stmt}-{types}-{scalar}", "wb") as f:
                f.write(bytes([stmt, types | scalar, 128]) + body)
PY
else
  cp fuzz/gallery_seeds/*.db "$BUILD/corpus/"
fi

ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
"$BUILD/fuzzer" -runs="$RUNS" -max_total_time="$SECONDS_MAX" \
  -max_len="$MAX_LEN" -artifact_prefix="$BUILD/" -print_final_stats=1 \
  "$BUILD/corpus" > "$BUILD/fuzz.log" 2>&1 || true
grep -E '^(INFO: (Seed|Running)|Done|stat::)|ERROR|SUMMARY|runtime error|#[0-9]+.*DONE' "$BUILD/fuzz.log" || true

# libFuzzer's exit status is lost in the pipe: judge from the log.
if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|deadly signal' "$BUILD/fuzz.log"; then
  echo "fuzz $TARGET: FAILED (see $BUILD/fuzz.log and the crash-* file in $BUILD/)" >&2
  exit 1
fi
DONE=$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/fuzz.log")
COVERAGE=$(sed -n 's/.*DONE *cov: \([0-9]*\).*/\1/p' "$BUILD/fuzz.log" | tail -1)
echo "fuzz $TARGET: ${DONE:-0} inputs, coverage ${COVERAGE:-?} edges, no crash"
if [ "${DONE:-0}" -lt "$MIN_RUNS" ]; then
  echo "fuzz $TARGET: FAILED: fewer than $MIN_RUNS inputs in ${SECONDS_MAX}s" >&2
  exit 1
fi
