#!/bin/sh
# Runs SQL files in the sqlite3 shell with a facevec extension loaded, and checks
# each by the conventions of tests/sql/ (those tests/sqlshell.py reads):
#
# - `select 'name', <condition>;` prints `name|1` when the check holds: the output
#   must be exactly these rows, in order, each ending in 1;
# - a statement ending in `; -- error: message` must fail with that message (in a
#   file without such lines and without checks, as errors.sql is written, every
#   `select ...; -- message`), and no other statement may fail;
# - a file with neither (knn.sql, ...) must run to its end without crashing the
#   shell: a final row marks the end.
#
# Needs only the sqlite3 shell (SQLITE3, default sqlite3) and POSIX sh and awk.
# Usage: sh tests/sql/check.sh EXTENSION FILE.sql...   (EXTENSION as .load takes it)
# Prints one line per file and a closing count; exits 1 if any file failed.

set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 EXTENSION FILE.sql..." >&2
  exit 2
fi
extension=$1
shift
shell=${SQLITE3:-sqlite3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
END_MARK="end of script"

# The checks a file declares, one name a line.
checks() {
  awk -v q="'" 'tolower(substr($0, 1, 8)) == "select " q {
    rest = substr($0, 9); end = index(rest, q)
    if (end > 1 && substr(rest, end + 1, 1) == ",") print substr(rest, 1, end - 1)
  }' "$1"
}

# The errors a file expects, as "line|message".
expected_errors() {
  awk -v mode="$2" '{
    if (mode == "marked") { at = index($0, "; -- error: "); if (at) print NR "|" substr($0, at + 12) }
    else { at = index($0, "; -- ")
      if (at && tolower(substr($0, 1, 6)) == "select") print NR "|" substr($0, at + 5) }
  }' "$1"
}

# The errors the shell reported, as "line|message" (3.40 says "Runtime error near
# line N: ..." or "Parse error near line N: ...", older shells "Error: near line N: ...").
reported_errors() {
  sed -n -e 's/^Runtime error near line \([0-9]*\): /\1|/p' \
    -e 's/^Parse error near line \([0-9]*\): /\1|/p' \
    -e 's/^Error: near line \([0-9]*\): /\1|/p' "$1"
}

passed=0
failed=0
for sql in "$@"; do
  name=$(basename "$sql")
  { cat "$sql"; printf "\nselect '%s';\n" "$END_MARK"; } \
    | "$shell" -batch :memory: -cmd ".load $extension" >"$work/out" 2>"$work/err"
  status=$?
  problem=""
  if [ "$(tail -n 1 "$work/out")" != "$END_MARK" ] || [ "$status" -gt 1 ]; then
    problem="the shell stopped before the end (exit status $status): $(tail -n 3 "$work/err")"
  else
    sed '$d' "$work/out" >"$work/rows"
    checks "$sql" >"$work/checks"
    if grep -q "; -- error: " "$sql"; then
      expected_errors "$sql" marked >"$work/expected"
    elif [ ! -s "$work/checks" ]; then
      expected_errors "$sql" plain >"$work/expected"
    else
      : >"$work/expected"
    fi
    reported_errors "$work/err" >"$work/reported"
    if [ -s "$work/checks" ] || [ -s "$work/expected" ]; then
      sed 's/|[^|]*$//' "$work/rows" >"$work/names"
      if ! cmp -s "$work/names" "$work/checks"; then
        problem="its rows are not its checks in order: $(diff "$work/checks" "$work/names" | head -n 5 | tr "\n" " ")"
      elif grep -qv '|1$' "$work/rows"; then
        problem="failing checks: $(grep -v '|1$' "$work/rows" | head -n 5 | tr '\n' ' ')"
      elif ! cmp -s "$work/reported" "$work/expected"; then
        problem="errors differ (< expected, > reported): $(diff "$work/expected" "$work/reported" | head -n 5 | tr "\n" " ")"
      elif [ ! -s "$work/expected" ] && [ -s "$work/err" ]; then
        problem="unexpected output on stderr: $(head -n 3 "$work/err" | tr "\n" " ")"
      fi
    fi
  fi
  if [ -n "$problem" ]; then
    failed=$((failed + 1))
    echo "FAIL $name: $problem"
  elif [ -s "$work/checks" ] || [ -s "$work/expected" ]; then
    passed=$((passed + 1))
    echo "ok   $name: $(grep -c . "$work/checks") checks hold, $(grep -c . "$work/expected") errors as expected"
  else
    passed=$((passed + 1))
    echo "ok   $name: ran to the end ($(grep -c . "$work/reported") SQL errors, not annotated)"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
