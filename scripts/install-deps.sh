#!/usr/bin/env bash
# Installs what building and testing multiproc needs on Debian 12, if anything is missing.
# Usage: scripts/install-deps.sh [linux|windows|bench|fuzz|sanitizers|mpi|...]...   (default: linux)
set -euo pipefail

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(linux)

packages=()
need() {  # need <file that proves it is installed> <package>
  [ -e "$1" ] || packages+=("$2")
}
for what in "${want[@]}"; do
  case "$what" in
    linux)
      need /usr/bin/cmake cmake
      need /usr/bin/ninja ninja-build
      need /usr/bin/g++ g++
      need /usr/include/cereal/cereal.hpp libcereal-dev
      need /usr/include/gtest/gtest.h libgtest-dev
      need /usr/include/gmock/gmock.h libgmock-dev
      need /usr/src/googletest/CMakeLists.txt googletest
      ;;
    windows)
      need /usr/bin/x86_64-w64-mingw32-g++-posix g++-mingw-w64-x86-64-posix
      need /usr/lib/wine/wine64 wine64
      # Without the preloader (only a Recommends of wine64), Wine maps its fixed low regions
      # after the dynamic loader has placed the program at random: about one process start in
      # 3000 then fails with "failed to map the shared user data" (CreateProcess: Internal
      # error). The preloader reserves those regions before anything else is mapped.
      need /usr/lib/wine/wine64-preloader wine64-preloader
      ;;
    fuzz)
      # clang 19 and its runtimes, libFuzzer among them (Debian's `clang` is 14): the fuzz
      # targets (scripts/fuzz.sh), built with the same compiler as the sanitized
      # configurations of scripts/test.sh.
      need /usr/bin/clang++-19 clang-19
      need /usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.fuzzer-x86_64.a libclang-rt-19-dev
      ;;
    sanitizers)
      # clang 19 (a bookworm package) and its runtimes: LLVM's ASan holds its allocator locks
      # across fork() from release 18, its TSan from 19, so the sanitized configurations of
      # scripts/test.sh can run pools on fork (GCC 12's and clang 16's runtimes deadlock).
      need /usr/bin/clang++-19 clang-19
      need /usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.tsan-x86_64.a libclang-rt-19-dev
      ;;
    bench)
      need /usr/include/benchmark/benchmark.h libbenchmark-dev
      need /usr/bin/python3 python3
      ;;
    docs)
      # scripts/docs.sh: doxygen builds the API reference; --check looks at it in headless
      # Chromium (a font to draw text with) and reads the screenshots with Pillow.
      need /usr/bin/doxygen doxygen
      need /usr/bin/chromium chromium
      need /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
      need /usr/bin/python3 python3
      need /usr/lib/python3/dist-packages/PIL/Image.py python3-pil
      ;;
    mpi)
      # The mpi start method (-DMULTIPROC_MPI=ON, scripts/mpi-tests.sh): Debian's Open MPI, and
      # mpi4py for the side-by-side benchmark (mpi4py.futures).
      need /usr/bin/mpiexec.openmpi openmpi-bin
      need "/usr/lib/$(uname -m)-linux-gnu/openmpi/include/mpi.h" libopenmpi-dev
      need /usr/lib/python3/dist-packages/mpi4py/__init__.py python3-mpi4py
      ;;
    package)
      # scripts/package-test.sh: the .deb (CPack writes it itself), then a consumer built with
      # pkg-config against the installed package.
      need /usr/bin/pkg-config pkg-config
      ;;
    *) echo "install-deps: unknown set '$what'" >&2; exit 2 ;;
  esac
done

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${packages[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; run: sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
