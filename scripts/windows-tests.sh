#!/usr/bin/env bash
# Builds multiproc, its tests and its examples as Windows programs (mingw-w64) and runs them
# under Wine. Exits non-zero if the build or any program fails.
#
#   scripts/windows-tests.sh [build-dir]        (default: build-mingw)
#
# Needs x86_64-w64-mingw32-g++-posix (Debian: g++-mingw-w64-x86-64-posix) and Wine
# (Debian: wine64 and wine64-preloader). Programs run through Wine's cmd /c, as the toolchain file's emulator does
# (see there why). Environment:
#   WINEPREFIX              Wine prefix to use (default: <build-dir>/wine, created if missing)
#   MULTIPROC_TEST_TIMEOUT  seconds one test binary or example may run (default: 900)
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
# Without it about one process start in 3000 fails at random (see scripts/install-deps.sh).
[ -x "${wine}-preloader" ] || die "${wine}-preloader not found (apt-get install wine64-preloader)"
[ -x "$wineserver" ] || wineserver=$(command -v wineserver) || die "wineserver not found"

# --- build -------------------------------------------------------------------------------
generator=()
if command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ]; then generator=(-G Ninja); fi
# The same settings as the "mingw" preset, into a directory of the caller's choice.
cmake -S "$repo" -B "$build" "${generator[@]}" \
  -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/toolchains/mingw-w64.cmake" \
  -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" -DMULTIPROC_WARNINGS_AS_ERRORS=ON
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
# It stays 60 s after the last program ends (it fails harmlessly if a server for this prefix
# already runs). Its output goes nowhere: holding this script's stdout open, it would keep a
# caller that reads through a pipe (CI) waiting for as long as it lives.
"$wineserver" -p60 </dev/null >/dev/null 2>&1 || true
if [ "$own_prefix" = 1 ]; then
  # Only the prefix this script made is ours to stop (with whatever a failed test left behind).
  trap '"$wineserver" -k >/dev/null 2>&1 || true' EXIT
fi
# The Wine services these commands start outlive them, so they too get no stdout of ours.
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "windows-tests: creating the Wine prefix $WINEPREFIX"
  "$wine" wineboot -i </dev/null >/dev/null 2>&1 || die "cannot create the Wine prefix $WINEPREFIX"
fi
# A crashing child (the tests crash some on purpose) must end at once with its NTSTATUS, as on
# Windows without a debugger, instead of Wine starting winedbg and printing a backtrace: a
# debugger command that does not exist makes Wine skip that.
"$wine" reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
  /v Debugger /t REG_SZ /d 'multiproc-no-debugger %ld %ld' /f </dev/null >/dev/null 2>&1 || true

# --- run -----------------------------------------------------------------------------------
# The tests through CTest: each entry is a whole test binary (filtered to one area), never a
# process per test case, and CTest runs it through the toolchain's emulator (Wine). One at a
# time: the suites start many processes each and time some of them.
failed=0
ctest --test-dir "$build" --output-on-failure --timeout "$timeout_s" || failed=1

# The examples must run to completion as they do on Linux.
mapfile -t examples < <(find "$build/examples" -maxdepth 1 -type f -name '*.exe' 2>/dev/null | sort)
[ "${#examples[@]}" -gt 0 ] || die "no example was built under $build/examples"
for example in "${examples[@]}"; do
  echo "=== example $(basename "$example") (Wine)"
  rc=0
  (cd "$build/examples" &&
    timeout --kill-after=10 "$timeout_s" "$wine" cmd /c "$(basename "$example")") || rc=$?
  if [ "$rc" != 0 ]; then
    echo "=== example $(basename "$example") FAILED (exit code $rc)"
    failed=1
  fi
done

if [ "$failed" != 0 ]; then
  echo "windows-tests: FAILED (see above)" >&2
  exit 1
fi
echo "windows-tests: every test and example passed as a Windows program under Wine"
