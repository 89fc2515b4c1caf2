#!/usr/bin/env bash
# Runs an MPI job under a time limit and checks how it ended, and that none of its processes
# is left. Usage: expect_exit.sh EXPECTED SECONDS PROGRAM -- COMMAND...
#   EXPECTED: an exit code, or "nonzero" (any failure within the time limit).
set -u
expected=$1 seconds=$2 program=$3
shift 4
started=$(date +%s%N)
timeout --kill-after=5 "$seconds" "$@"
code=$?
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
# By the clock, not the code: mpiexec itself answers a rank killed by SIGKILL with 137.
if [ "$elapsed_ms" -ge $((seconds * 1000)) ]; then
  echo "FAIL: the job did not end within ${seconds} s (exit code $code)" >&2
  exit 1
fi
if [ "$expected" = nonzero ]; then
  [ "$code" -ne 0 ] || { echo "FAIL: the job exited 0" >&2; exit 1; }
elif [ "$code" -ne "$expected" ]; then
  echo "FAIL: the job exited $code, expected $expected" >&2
  exit 1
fi
# Processes running the program's file (its command line would match this script too).
left=""
for exe in /proc/[0-9]*/exe; do
  if [ "$(readlink "$exe" 2>/dev/null)" = "$program" ]; then
    pid=${exe#/proc/}
    left="$left ${pid%/exe}"
  fi
done
if [ -n "$left" ]; then
  echo "FAIL: processes of $program are left:" >&2
  ps -o pid,args -p $left >&2
  exit 1
fi
echo "ok: exit code $code after $elapsed_ms ms, no process left"
