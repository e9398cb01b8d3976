#!/bin/sh
# Build the libFuzzer target for facevec's SQL functions and run it.
#
#   fuzz/run.sh [RUNS] [SECONDS]     (defaults: 1000000 inputs, at most 170 s)
#
# Needs clang with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev)
# and libsqlite3 (apt-get install libsqlite3-dev). Exits non-zero on a crash,
# a sanitizer report, or fewer than RUNS inputs tried; the crashing input is
# left in fuzz/build/.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
SECONDS_MAX=${2:-170}
CC=${CC:-clang}
BUILD=fuzz/build
rm -rf "$BUILD/corpus"  # start from the seeds: a run takes the same time everywhere
mkdir -p "$BUILD" "$BUILD/corpus"

# -DSQLITE_CORE: the extension calls the linked libsqlite3 directly.
"$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=all -DSQLITE_CORE -Wall -Wextra \
  -Icsrc -Icsrc/sqlite \
  fuzz/fuzz_sql_functions.c csrc/*.c \
  -lsqlite3 -lm -o "$BUILD/fuzz_sql_functions"

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

ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
"$BUILD/fuzz_sql_functions" -runs="$RUNS" -max_total_time="$SECONDS_MAX" \
  -max_len=1024 -artifact_prefix="$BUILD/" -print_final_stats=1 \
  "$BUILD/corpus" > "$BUILD/fuzz.log" 2>&1 || true
grep -E '^(INFO: (Seed|Running)|Done|stat::)|ERROR|SUMMARY|runtime error' "$BUILD/fuzz.log" || true

# libFuzzer's exit status is lost in the pipe: judge from the log.
if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|deadly signal' "$BUILD/fuzz.log"; then
  echo "fuzz: FAILED (see $BUILD/fuzz.log and the crash-* file in $BUILD/)" >&2
  exit 1
fi
DONE=$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/fuzz.log")
echo "fuzz: ${DONE:-0} inputs, no crash"
if [ "${DONE:-0}" -lt "$RUNS" ]; then
  echo "fuzz: FAILED: fewer than $RUNS inputs in ${SECONDS_MAX}s" >&2
  exit 1
fi
