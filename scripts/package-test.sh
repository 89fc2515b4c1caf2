#!/usr/bin/env bash
# The Debian package, end to end, as root on Debian 12:
#   1. configures and builds the library alone (Release, tests and examples off, prefix /usr)
#   2. builds libmultiproc-dev_<version>_<arch>.deb with cpack (cmake/packaging.cmake)
#   3. installs it with dpkg -i
#   4. builds tests/consumer/main.cpp against the installed package twice, with a plain
#      find_package(multiproc) project and with `pkg-config --cflags --libs multiproc`, and
#      runs both: each must print "consumer: 49 [1, 4, 9]"
#   5. removes it with dpkg -r and checks that nothing of it is left in /usr
# Leaves the system as it found it, even when a step fails or the script is interrupted (the
# package is removed on the way out). It refuses to start if libmultiproc-dev is already
# installed by someone else; one left behind by an interrupted run of this script is removed
# first, so the script can simply be run again.
#
#   scripts/package-test.sh [--from BUILD] [WORK_DIR]     (default: build/package-test)
#
# --from BUILD: package that build instead of building the library in step 1 -- a Release
# build configured with -DMULTIPROC_INSTALL=ON -DCMAKE_INSTALL_PREFIX=/usr
# -DCMAKE_POSITION_INDEPENDENT_CODE=ON and the default start method (scripts/test.sh passes
# its first configuration, so CI compiles the library once for both).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
from=""
if [ "${1:-}" = "--from" ] && [ $# -ge 2 ]; then
  from=$(cd "$2" && pwd)
  shift 2
fi
work=${1:-build/package-test}
pkg=libmultiproc-dev
expected="consumer: 49 [1, 4, 9]"

say() { echo "package-test: $*"; }
die() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (dpkg -i / dpkg -r)"
scripts/install-deps.sh linux package

mkdir -p "$work"
work=$(cd "$work" && pwd)
# Present while the package may be installed by this script; survives an interrupted run.
stamp=$work/installed-by-package-test

installed() { [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ]; }
remove_package() { dpkg -r "$pkg" >"$work/dpkg-r.log" 2>&1; }

cleanup() {
  local status=$?
  if [ -e "$stamp" ]; then
    say "removing $pkg on the way out"
    if remove_package; then
      rm -f "$stamp"
    else
      echo "package-test: dpkg -r $pkg failed:" >&2
      cat "$work/dpkg-r.log" >&2
      status=1
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -e "$stamp" ]; then
  say "$pkg was left installed by an interrupted run: removing it first"
  remove_package || die "dpkg -r $pkg failed: $(cat "$work/dpkg-r.log")"
  rm -f "$stamp"
elif installed; then
  die "$pkg is installed already (not by this script): remove it first (dpkg -r $pkg)"
fi

rm -f "$work"/*.log "$work"/*.txt  # the records of an earlier run

# What of the package's names is in /usr before: after removal it must be exactly this again.
mine() {
  find /usr \( -name multiproc -o -name 'libmultiproc*' -o -name 'multiproc.pc' \
    -o -name 'multiproc[A-Z]*.cmake' \) -print 2>/dev/null | sort
}
mine >"$work/usr-before.txt"

# 1. The library alone. Each run starts from the same configuration; the build is incremental.
if [ -n "$from" ]; then
  build=$from
  cached() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
  [ "$(cached CMAKE_BUILD_TYPE)" = Release ] && [ "$(cached MULTIPROC_INSTALL)" = ON ] &&
    [ "$(cached CMAKE_INSTALL_PREFIX)" = /usr ] &&
    [ "$(cached CMAKE_POSITION_INDEPENDENT_CODE)" = ON ] ||
    die "$build is not a Release build with MULTIPROC_INSTALL=ON, prefix /usr and PIC"
  say "packaging the library built in $build"
  nice cmake --build "$build" --target multiproc >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; die "building the library failed"; }
else
  build=$work/build
  say "building the library (Release) in $build"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMULTIPROC_TESTS=OFF \
    -DMULTIPROC_EXAMPLES=OFF -DMULTIPROC_BENCHMARKS=OFF -DMULTIPROC_INSTALL=ON \
    -DMULTIPROC_WARNINGS_AS_ERRORS=ON -DCMAKE_INSTALL_PREFIX=/usr \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON >"$work/configure.log" ||
    die "configuring failed (see $work/configure.log)"
  nice cmake --build "$build" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; die "building the library failed"; }
fi

# 2. The package.
rm -rf "$work/deb"
(cd "$build" && cpack -G DEB -B "$work/deb") >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; die "cpack failed"; }
debs=("$work"/deb/"$pkg"_*.deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
  die "cpack made no single $pkg .deb in $work/deb"
fi
deb=${debs[0]}
say "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
depends=$(dpkg-deb -f "$deb" Depends)
case "$depends" in
  *libcereal-dev*) say "Depends: $depends" ;;
  *) die "the package does not depend on libcereal-dev (Depends: '$depends')" ;;
esac
for field in Maintainer Description Version Architecture Section; do
  [ -n "$(dpkg-deb -f "$deb" "$field")" ] || die "the package has no $field field"
done
# Its paths, and which of them exist before it is installed (/usr/include, ...): after removal
# the others must be gone.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^$' \
  >"$work/paths.txt" || true
outside=$(grep -Ev '^/usr(/|$)' "$work/paths.txt" || true)
[ -z "$outside" ] || die "the package puts files outside /usr: $outside"
while IFS= read -r path; do
  [ -e "$path" ] && echo "$path"
done <"$work/paths.txt" >"$work/paths-before.txt"

# 3. Installed as a user would.
touch "$stamp"
say "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; die "dpkg -i failed"; }
installed || die "dpkg -i returned, but $pkg is not installed"
lib=$(dpkg -L "$pkg" | grep -m1 '/libmultiproc\.a$') || die "dpkg -L $pkg lists no libmultiproc.a"
say "installed: $lib and the rest of its $(grep -c "" "$work/paths.txt") paths"

# 4. A user's program against the installed package only: no prefix paths, no package registry.
unset CMAKE_PREFIX_PATH PKG_CONFIG_PATH multiproc_DIR
check_output() {  # check_output <what> <program>
  local got
  got=$("$2") || die "the consumer built with $1 exited with $?"
  [ "$got" = "$expected" ] || die "the consumer built with $1 printed '$got', not '$expected'"
  say "$1: $got"
}

consumer=$work/consumer-find-package
rm -rf "$consumer"
cmake -S tests/consumer -B "$consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMULTIPROC_CONSUMER_MODE=package -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  >"$work/consumer-configure.log" 2>&1 ||
  { cat "$work/consumer-configure.log" >&2; die "configuring the find_package consumer failed"; }
found=$(sed -n 's/^multiproc_DIR:PATH=//p' "$consumer/CMakeCache.txt")
case "$found" in
  /usr/lib/*) ;;
  *) die "find_package(multiproc) found '$found', not the package in /usr/lib" ;;
esac
nice cmake --build "$consumer" >"$work/consumer-build.log" 2>&1 ||
  { cat "$work/consumer-build.log" >&2; die "building the find_package consumer failed"; }
check_output "find_package(multiproc) from $found" "$consumer/consumer"

pcdir=$(pkg-config --variable=pcfiledir multiproc) || die "pkg-config does not know multiproc"
case "$pcdir" in
  /usr/lib/*) ;;
  *) die "pkg-config found multiproc.pc in '$pcdir', not in the package's /usr/lib" ;;
esac
flags=$(pkg-config --cflags --libs multiproc)
flags=${flags%" "}
mkdir -p "$work/consumer-pkg-config"
# shellcheck disable=SC2086  # the flags are words
nice "${CXX:-c++}" -Wall -Wextra -Werror tests/consumer/main.cpp $flags \
  -o "$work/consumer-pkg-config/consumer" || die "compiling with pkg-config's flags failed"
check_output "pkg-config ($flags)" "$work/consumer-pkg-config/consumer"

# 5. Removed: nothing of it may stay.
say "dpkg -r $pkg"
remove_package || { cat "$work/dpkg-r.log" >&2; die "dpkg -r failed"; }
rm -f "$stamp"
! installed || die "dpkg -r returned, but $pkg is still installed"
left=$(grep -vxF -f "$work/paths-before.txt" "$work/paths.txt" | while IFS= read -r path; do
  [ -e "$path" ] && echo "$path"
done || true)
[ -z "$left" ] || die "dpkg -r left behind: $left"
mine >"$work/usr-after.txt"
diff -u "$work/usr-before.txt" "$work/usr-after.txt" >&2 ||
  die "/usr differs from before the install (above)"
new=$(grep -cvxF -f "$work/paths-before.txt" "$work/paths.txt" || true)
say "removed: none of the $new paths it added is left in /usr"
say "passed: built, installed, used with find_package and pkg-config, removed"
