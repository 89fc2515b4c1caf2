#!/usr/bin/env bash
# The mpi start method's configuration: installs Open MPI if missing (as root), configures
# BUILD_DIR with -DMULTIPROC_MPI=ON (Debug, warnings as errors), builds, and runs the tests
# labelled mpi (each a whole `mpiexec --oversubscribe -n 4` job; tests/mpi/CMakeLists.txt).
# As root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1: the
# tests set both.
#
#   scripts/mpi-tests.sh BUILD_DIR [-jN]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:?usage: scripts/mpi-tests.sh BUILD_DIR [-jN]}
jobs=${2:--j2}

"$repo/scripts/install-deps.sh" linux mpi
generator=()
[ -x /usr/bin/ninja ] && [ ! -f "$build/CMakeCache.txt" ] && generator=(-G Ninja)
cmake -S "$repo" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DMULTIPROC_MPI=ON \
  -DMULTIPROC_WARNINGS_AS_ERRORS=ON
cmake --build "$build" "$jobs" --target multiproc_mpi_tests multiproc_mpi_user_program \
  multiproc_mpi_user_program_variant
ctest --test-dir "$build" -L mpi --output-on-failure
