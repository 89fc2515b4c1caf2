#!/usr/bin/env bash
# The soak (issue 9, item 9): builds tests/soak (Release, in build/soak unless BUILD_DIR is
# given) and runs multiproc_soak for MINUTES on every POSIX start method this build has, the
# methods at once, each in its own process for the whole time (so each method soaks for all of
# MINUTES). Each one draws a seeded random mix of processes (start/join/terminate/kill, a queue,
# a pipe) and pools (created and dropped, apply/map/imap, 8-32 MiB and small payloads, workers
# killed from inside and outside), checks every outcome, and every 30 s and at the end compares
# descriptors, threads, children, zombies, mappings (all, and memfd//dev/shm ones), RSS and
# heap in use with a baseline taken after warm-up. Prints each method's lines as they come
# (prefixed [method]), then each method's summary table; exits non-zero if any method failed.
#
#   scripts/soak.sh MINUTES [BUILD_DIR] [--seed S] [--methods "fork spawn forkserver"]
#
# --seed replays a run (each method prints its seed; the same seed gives the same mix).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

usage() {
  echo "usage: scripts/soak.sh MINUTES [BUILD_DIR] [--seed S] [--methods \"fork spawn forkserver\"]" >&2
  exit 64
}
[ $# -ge 1 ] || usage
minutes=$1
shift
[[ "$minutes" =~ ^[0-9]+$ ]] && [ "$minutes" -gt 0 ] || usage
build=build/soak
seed_args=()
methods=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seed) [ $# -ge 2 ] || usage; seed_args=(--seed "$2"); shift 2 ;;
    --methods) [ $# -ge 2 ] || usage; methods=$2; shift 2 ;;
    --*) usage ;;
    *) build=$1; shift ;;
  esac
done

scripts/install-deps.sh linux
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMULTIPROC_WARNINGS_AS_ERRORS=ON \
  -DMULTIPROC_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target multiproc_soak
soak="$build/tests/multiproc_soak"
[ -n "$methods" ] || methods=$("$soak" --methods | tr '\n' ' ')

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
echo "soak: $minutes min on: $methods(logs in $logs while it runs)"
for method in $methods; do
  # The status goes to a file: the pipe through sed would hide it.
  ( set +e
    "$soak" --method "$method" --seconds $((minutes * 60)) "${seed_args[@]}" >"$logs/$method.log" 2>&1
    echo $? >"$logs/$method.status" ) &
  # Live view: each method's lines, prefixed, as they are written (its table comes at the end).
  tail -n +1 -F --pid=$! "$logs/$method.log" 2>/dev/null |
    sed -u -e '/^=== summary/,/^=== end of summary/d' -e "s/^/[$method] /" &
done
wait

failed=()
for method in $methods; do
  echo
  sed -n '/^=== summary/,/^=== end of summary/p' "$logs/$method.log"
  status=$(cat "$logs/$method.status" 2>/dev/null || echo missing)
  if [ "$status" != 0 ]; then
    failed+=("$method (exit $status)")
    grep '^FAIL' "$logs/$method.log" || true
  fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "soak: FAILED: ${failed[*]}"
  exit 1
fi
echo "soak: clean on $methods($minutes min each)"
