#!/usr/bin/env bash
# The demo: installs what is missing (apt-get, as root), builds the examples and runs the
# seed's programs in C++ — os.fork(), Process, and Pool (apply_async, then apply).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/install-deps.sh linux
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DMULTIPROC_TESTS=OFF >/dev/null
cmake --build build/demo
bin=build/demo/examples
show() {
  echo
  echo "\$ $*"
  "$@"
}
show "$bin/fork"
show "$bin/process"
show "$bin/process" --no-join
show "$bin/pool"
show "$bin/pool" --apply
