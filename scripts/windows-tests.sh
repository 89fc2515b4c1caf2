#!/usr/bin/env bash
# Builds multiproc, its tests and its examples as Windows programs (mingw-w64) and runs them
# under Wine. Exits non-zero if the build or any program fails.
#
#   scripts/windows-tests.sh [build-dir]        (default: build-mingw)
#
# Needs x86_64-w64-mingw32-g++-posix (Debian: g++-mingw-w64-x86-64-posix) and Wine
# (Debian: wine64). Environment:
#   WINEPREFIX              Wine prefix to use (default: <build-dir>/wine, created if missing)
#   MULTIPROC_TEST_TIMEOUT  seconds one program may run (default: 900)
#   CMAKE_BUILD_TYPE        default: Release
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build-mingw}
case $build in /*) ;; *) build=$PWD/$build ;; esac
timeout_s=${MULTIPROC_TEST_TIMEOUT:-900}
wine=/usr/lib/wine/wine64
wineserver=/usr/lib/wine/wineserver

die() { echo "windows-tests: $*" >&2; exit 2; }
command -v x86_64-w64-mingw32-g++-posix >/dev/null ||
  die "x86_64-w64-mingw32-g++-posix not found (apt-get install g++-mingw-w64-x86-64-posix)"
[ -x "$wine" ] || die "$wine not found (apt-get install wine64)"
[ -x "$wineserver" ] || wineserver=$(command -v wineserver) || die "wineserver not found"

# --- build -------------------------------------------------------------------------------
generator=()
if command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ]; then generator=(-G Ninja); fi
cmake -S "$repo" -B "$build" "${generator[@]}" \
  -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/toolchains/mingw-w64.cmake" \
  -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}"
cmake --build "$build" --parallel "$(nproc 2>/dev/null || echo 2)"

# --- Wine ----------------------------------------------------------------------------------
export WINEDEBUG=-all
own_prefix=0
if [ -z "${WINEPREFIX:-}" ]; then
  export WINEPREFIX=$build/wine
  own_prefix=1
fi
mkdir -p "$WINEPREFIX"
# One server for every program of this run: a cold Wine start costs seconds, a warm one little.
# (It fails harmlessly if a server for this prefix is already running.)
"$wineserver" -p 2>/dev/null || true
if [ "$own_prefix" = 1 ]; then
  # Only the prefix this script made is ours to stop (with whatever a failed test left behind).
  trap '"$wineserver" -k >/dev/null 2>&1 || true' EXIT
fi
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "windows-tests: creating the Wine prefix $WINEPREFIX"
  "$wine" wineboot -i >/dev/null 2>&1 || die "cannot create the Wine prefix $WINEPREFIX"
fi
# A crashing child (the tests crash some on purpose) must end at once with its NTSTATUS, as on
# Windows without a debugger, instead of Wine starting winedbg and printing a backtrace: a
# debugger command that does not exist makes Wine skip that.
"$wine" reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
  /v Debugger /t REG_SZ /d 'multiproc-no-debugger %ld %ld' /f >/dev/null 2>&1 || true

# --- run -----------------------------------------------------------------------------------
failed=()
ran=0
run() {  # run <program.exe> [args...]: the whole binary in one Wine process
  local program=$1
  shift
  echo "=== $(basename "$program") (Wine)"
  ran=$((ran + 1))
  local rc=0
  (cd "$(dirname "$program")" && timeout --kill-after=10 "$timeout_s" "$wine" "$program" "$@") ||
    rc=$?
  if [ "$rc" != 0 ]; then
    echo "=== $(basename "$program") FAILED (exit code $rc)"
    failed+=("$(basename "$program")")
  fi
}

mapfile -t tests < <(find "$build/tests" -maxdepth 2 -type f -name '*.exe' 2>/dev/null | sort)
[ "${#tests[@]}" -gt 0 ] || die "no test program was built under $build/tests"
for t in "${tests[@]}"; do run "$t" --gtest_brief=1; done

mapfile -t examples < <(find "$build/examples" -maxdepth 2 -type f -name '*.exe' 2>/dev/null | sort)
for e in "${examples[@]}"; do run "$e"; done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "windows-tests: ${#failed[@]} of $ran Windows programs failed: ${failed[*]}" >&2
  exit 1
fi
echo "windows-tests: all $ran Windows programs passed under Wine"
