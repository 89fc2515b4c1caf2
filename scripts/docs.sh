#!/usr/bin/env bash
# The API reference: runs doxygen over the public headers (include/multiproc/*.hpp; docs/
# Doxyfile.in says what is in and out) and prints where the site is. An undocumented public
# declaration or a malformed `///` comment fails it. Installs what is missing (apt-get, as
# root: scripts/install-deps.sh docs).
#
#   scripts/docs.sh [--check] [--out DIR]
#     --out DIR   build into DIR/html (default: build/docs/html)
#     --check     then look at the site as a reader would: open the front page and the
#                 mp::pool page in headless Chromium, save a screenshot of each (DIR/index.png,
#                 DIR/pool.png), fail if one is blank or lacks the word "pool", and fail if any
#                 link inside the site points to a file (or anchor) that does not exist. It
#                 also shows that these checks can fail: an undocumented declaration added to
#                 a scratch copy of the headers must fail doxygen, a page removed from a copy
#                 of the site must fail the link check, and a blank page must fail the
#                 screenshot check.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=build/docs
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docs: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-deps.sh docs
# Debian's interpreter: it has Pillow (python3-pil), which another python3 on PATH may lack.
py=/usr/bin/python3
[ -x "$py" ] || py=python3

mkdir -p "$out"
out=$(cd "$out" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
version=$(sed -n 's/^project(multiproc VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)

doxygen_run() {  # doxygen_run <source tree> <output dir>: the site of that tree's headers
  mkdir -p "$2"
  rm -rf "$2/html"  # no stale page may hide a broken link
  sed -e "s|@PROJECT_VERSION@|${version:-unknown}|g" -e "s|@SOURCE_DIR@|$1|g" \
    -e "s|@OUTPUT_DIR@|$2|g" docs/Doxyfile.in >"$2/Doxyfile"
  doxygen "$2/Doxyfile"
}

echo "docs: doxygen $(doxygen --version) over include/multiproc/*.hpp"
if ! doxygen_run "$repo" "$out"; then
  echo "docs: FAILED: doxygen warned (above): document every public declaration with ///" >&2
  exit 1
fi
pages=$(find "$out/html" -name '*.html' | wc -l)
echo "docs: API reference in $out/html/index.html ($pages pages)"
[ "$check" = 1 ] || exit 0

# ---- the check --------------------------------------------------------------------------
failures=0
fail() {
  echo "docs: check FAILED: $*" >&2
  failures=$((failures + 1))
}

browser() {  # browser <page file> <png> <dom>: a screenshot and the rendered DOM of one page
  # shellcheck disable=SC2054  # the comma is inside one flag: --window-size=W,H
  local flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --hide-scrollbars --window-size=1280,1400 --disable-dev-shm-usage)  # containers: small /dev/shm
  local url="file://$1" log=$scratch/chromium.log status=0
  rm -f "$2" "$3"
  # A fresh profile for every start: nothing carries over from an earlier run.
  timeout 120 chromium "${flags[@]}" --user-data-dir="$(mktemp -d -p "$scratch")" \
    --screenshot="$2" "$url" >>"$log" 2>&1 || status=$?
  timeout 120 chromium "${flags[@]}" --user-data-dir="$(mktemp -d -p "$scratch")" \
    --dump-dom "$url" >"$3" 2>>"$log" || status=$?
  if [ "$status" -ne 0 ] || [ ! -s "$2" ]; then
    echo "docs: chromium failed on $1 (status $status); its last lines:" >&2
    tail -n 5 "$log" >&2
    return 1
  fi
}

look_at() {  # look_at <name> <page file> <words...>: screenshot <name>.png, check it
  local name=$1 page=$2
  shift 2
  if [ ! -f "$page" ]; then
    fail "$page was not generated"
    return
  fi
  if browser "$page" "$out/$name.png" "$out/$name.dom.html"; then
    "$py" scripts/docs_check.py page "$out/$name.png" "$out/$name.dom.html" "$@" ||
      fail "$name page: blank or without its text"
    echo "docs: screenshot $out/$name.png"
  else
    fail "$name page: chromium could not show it"
  fi
}

echo "docs: checking the site as a reader would (headless $(chromium --version 2>/dev/null))"
look_at index "$out/html/index.html" pool "API reference"
look_at pool "$out/html/classmultiproc_1_1pool.html" pool "Class Reference" apply_async
"$py" scripts/docs_check.py links "$out/html" || fail "broken links inside the site"

# The checks above can fail: each is shown a case it must refuse.
mkdir -p "$scratch/tree/include" "$scratch/tree/docs"
cp -r include/multiproc "$scratch/tree/include/"
cp docs/api-mainpage.md "$scratch/tree/docs/"
printf '\nnamespace multiproc {\nvoid undocumented_probe();\n}\n' \
  >>"$scratch/tree/include/multiproc/this_process.hpp"
if doxygen_run "$scratch/tree" "$scratch/gate" 2>"$scratch/gate.log"; then
  fail "doxygen accepted an undocumented declaration (WARN_AS_ERROR is not in force)"
elif ! grep -q undocumented_probe "$scratch/gate.log"; then
  fail "doxygen failed on the scratch tree, but not because of the undocumented declaration"
else
  said=$(grep -m 1 undocumented_probe "$scratch/gate.log" | sed 's|.*/include/||')
  echo "docs: an undocumented declaration fails the build: $said"
fi
cp -r "$out/html" "$scratch/site"
rm "$scratch/site/classmultiproc_1_1pool.html"
if "$py" scripts/docs_check.py links "$scratch/site" >/dev/null 2>&1; then
  fail "the link check passed a site with a missing page"
else
  echo "docs: a site with a page removed fails the link check"
fi
printf '<!DOCTYPE html><html><body></body></html>\n' >"$scratch/blank.html"
if ! browser "$scratch/blank.html" "$scratch/blank.png" "$scratch/blank.dom"; then
  fail "chromium could not show a blank page"
elif "$py" scripts/docs_check.py page "$scratch/blank.png" "$scratch/blank.dom" pool \
  >/dev/null 2>&1; then
  fail "the page check passed a blank page"
else
  echo "docs: a blank page fails the screenshot check"
fi

if [ "$failures" -ne 0 ]; then
  echo "docs: check FAILED ($failures problems)" >&2
  exit 1
fi
echo "docs: check passed: index.png and pool.png are pages with text, no broken link"
