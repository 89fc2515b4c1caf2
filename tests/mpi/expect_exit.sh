#!/usr/bin/env bash
# Runs an MPI job under a time limit and checks how it ended, and that none of its processes
# is left. Usage: expect_exit.sh EXPECTED SECONDS PROGRAM -- COMMAND...
#   EXPECTED: an exit code, or "nonzero" (any failure but the time limit's 124).
set -u
expected=$1 seconds=$2 program=$3
shift 4
timeout --kill-after=5 "$seconds" "$@"
code=$?
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  echo "FAIL: the job did not end within ${seconds} s" >&2
  exit 1
fi
if [ "$expected" = nonzero ]; then
  [ "$code" -ne 0 ] || { echo "FAIL: the job exited 0" >&2; exit 1; }
elif [ "$code" -ne "$expected" ]; then
  echo "FAIL: the job exited $code, expected $expected" >&2
  exit 1
fi
# This script's own command line names the program too.
left=$(pgrep -f -- "$program" | grep -v -x "$$")
if [ -n "$left" ]; then
  echo "FAIL: processes of $program are left:" >&2
  ps -o pid,args -p $left >&2
  exit 1
fi
echo "ok: exit code $code, no process left"
