#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (apt-get, as root), then
# builds and tests
#   - Linux, default start method auto (the default: fork, or forkserver in a threaded
#     program), warnings as errors (Release, configured as the Debian package is built)
#   - Linux, default start method spawn, warnings as errors (Debug)
#   - Linux with the portable POSIX backend (what macOS builds), fork and spawn
#   - the soak, 2 minutes (scripts/soak.sh; longer runs are a separate command)
#   - the mpi start method over 4 ranks of Open MPI (scripts/mpi-tests.sh)
#   - Linux with AddressSanitizer + UndefinedBehaviorSanitizer (clang 19)
#   - Linux with ThreadSanitizer (clang 19)
#   - Windows programs (mingw-w64), run under Wine
#   - the libFuzzer targets (clang 19, ASan + UBSan, sharing the ASan configuration's library):
#     findings replayed, 10 s each (fuzz.sh)
# Every configuration runs the conformance suite on every start method it has. Then the API
# reference (scripts/docs.sh --check: doxygen warnings fail it, the site is checked in headless
# Chromium) and the Debian package (scripts/package-test.sh: built, installed with dpkg, used by
# a consumer, removed).
#
#   scripts/test.sh                every configuration, one after another (about 29 minutes on
#                                  a 2-CPU machine)
#   scripts/test.sh --quick        the first configuration only
#   scripts/test.sh --list         the configurations' short names
#   scripts/test.sh --only A,B     only these (short names): how the workflow runs them as
#                                  parallel jobs. soak and debian use linux-auto's build, fuzz
#                                  linux-asan-ubsan's: name them together (or they build it).
set -euo pipefail  # pipefail: a step piped into tee still fails as itself

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
quick=0
only=""
list=0
case "${1:-}" in
  --quick) quick=1 ;;
  --list) list=1 ;;
  --only)
    only=",${2:?--only needs a comma-separated list of names (see --list)},"
    ;;
  "") ;;
  *)
    echo "usage: scripts/test.sh [--quick | --list | --only NAME[,NAME...]]" >&2
    exit 2
    ;;
esac

if [ "$list" = 1 ]; then
  :
elif [ "$quick" = 1 ]; then
  scripts/install-deps.sh linux
else
  scripts/install-deps.sh linux windows fuzz sanitizers mpi
fi

passed=0
failed=0
failures=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
timings=()
step() {  # step <name> <command...>: runs one configuration, counts and times it
  local name=$1 started=$SECONDS outcome=passed
  local short=${name%% *}  # "linux-tsan (clang 19)" -> linux-tsan
  shift
  if [ "$list" = 1 ]; then
    echo "$short"
    return
  fi
  if [ -n "$only" ] && [[ "$only" != *",$short,"* ]]; then
    return
  fi
  echo
  echo "=== $name ==="
  if "$@" 2>&1 | tee -a "$log"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    outcome=FAILED
  fi
  timings+=("$(printf '%5d s  %-7s %s' $((SECONDS - started)) "$outcome" "$name")")
}

linux_suite() {  # linux_suite <name> <cmake options...>
  local name=$1
  shift
  local dir=build/ci-$name
  cmake -S . -B "$dir" -G Ninja -DMULTIPROC_WARNINGS_AS_ERRORS=ON "$@" >/dev/null &&
    cmake --build "$dir" &&
    ctest --test-dir "$dir" --output-on-failure -j 2 "${ctest_extra[@]}"
}

# Read only by sanitized programs.
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# ignore_noninstrumented_modules: tests/main.cpp says why (an exception_ptr freed in libstdc++).
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1

ctest_extra=()
# Release, configured as the Debian package is built: the package step packages this build.
step "linux-auto (Release)" linux_suite auto -DCMAKE_BUILD_TYPE=Release -DMULTIPROC_BACKEND=auto \
  -DMULTIPROC_INSTALL=ON -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_POSITION_INDEPENDENT_CODE=ON
if [ "$quick" = 0 ]; then
  # The compile-time refusals and the consumer builds (one of which compiles the library
  # again) do not depend on the build type or the default method: the first run covers them.
  ctest_extra=(-E "^(compile_fail_|consumer_)")
  step "linux-spawn (Debug)" linux_suite spawn -DCMAKE_BUILD_TYPE=Debug -DMULTIPROC_BACKEND=spawn
  # Sanitized builds run the suites, not the packaging and compile-failure checks. They build
  # with clang 19, whose ASan and TSan survive a fork from a threaded parent, so the pool suites
  # run on fork as well as spawn (tests/CMakeLists.txt, MULTIPROC_TEST_FORK_WHEN_SANITIZED);
  # under GCC 12's or clang 16's runtimes a forked worker can deadlock (README, Gotchas).
  # The POSIX backend without Linux's extras (pidfd, memfd, futex, PR_SET_PDEATHSIG...), as
  # macOS builds it: every suite on fork and spawn (issue 16).
  step "linux-posix-portable (Debug)" linux_suite posix-portable -DCMAKE_BUILD_TYPE=Debug \
    -DMULTIPROC_POSIX_PORTABLE=ON -DMULTIPROC_EXAMPLES=OFF
  # The soak (issue 9): 2 minutes of a random mix on every method at once, resources checked
  # every 30 s; built in the first configuration's tree (its library is compiled already).
  step "soak (2 min)" scripts/soak.sh 2 build/ci-auto
  # The mpi start method: its own build (-DMULTIPROC_MPI=ON), each test a whole mpiexec job.
  step "mpi (Open MPI, 4 ranks)" scripts/mpi-tests.sh build/ci-mpi
  # The ASan build also builds the fuzz targets, which link its library (fuzz/CMakeLists.txt).
  step "linux-asan-ubsan (clang 19)" linux_suite asan-clang19 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER=clang++-19 -DMULTIPROC_SANITIZE=address,undefined \
    -DMULTIPROC_EXAMPLES=OFF -DMULTIPROC_FUZZ=ON
  step "linux-tsan (clang 19)" linux_suite tsan-clang19 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER=clang++-19 -DMULTIPROC_SANITIZE=thread -DMULTIPROC_EXAMPLES=OFF
  step "windows (mingw-w64 under Wine)" scripts/windows-tests.sh build/ci-mingw
  step "fuzz (libFuzzer, 10 s per target)" scripts/fuzz.sh --build build/ci-asan-clang19 10
  step "docs (doxygen + site check)" scripts/docs.sh --check --out build/ci-docs
  step "debian package (dpkg -i, consumers, dpkg -r)" scripts/package-test.sh --from build/ci-auto \
    build/ci-package
fi

[ "$list" = 1 ] && exit 0
if [ -n "$only" ] && [ $((passed + failed)) -eq 0 ]; then
  echo "scripts/test.sh: no configuration is named ${only//,/ } (see --list)" >&2
  exit 2
fi

# Every CTest run ends with "N% tests passed, F tests failed out of T": add them up.
read -r tests_total tests_failed < <(awk '/tests passed, [0-9]+ tests? failed out of/ {
  total += $NF; failed += $(NF - 5) } END { print total + 0, failed + 0 }' "$log")
echo
echo "time per configuration (total $((SECONDS / 60)) min $((SECONDS % 60)) s):"
printf '%s\n' "${timings[@]}"
if [ "$failed" -ne 0 ]; then
  echo "failed configurations: ${failures[*]}"
fi
echo "configurations: $passed passed, $failed failed"
echo "tests: $((tests_total - tests_failed)) passed, $tests_failed failed"
[ "$failed" -eq 0 ]
