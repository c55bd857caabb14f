#!/bin/sh
# make dist: the source rock <package>-<version>.src.rock of this checkout,
# into DIST_DIR (default build/dist).
#
# The rock is what `luarocks pack <rockspec>` makes of a git source once the
# release tag exists: the rockspec beside a folder holding the source tree
# (named as luarocks names it: the base name of source.url without .git).
# Here the tree is the files git tracks in this checkout (git ls-files), so
# nothing is cloned or downloaded.  `luarocks build <rock>` of a .src.rock
# never fetches (cmd/build.lua: need_to_fetch = false; with a git source the
# rockspec has no source.file to unpack) and builds in that folder
# (build.lua: fs.change_dir(rockspec.source.dir)).
#
# Package and version are read from the rockspec.  Every entry has the time
# of the last commit and the entries are added in sorted order, so a clean
# checkout of one commit gives the same bytes every time.
set -e
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-build/dist}
LUAJIT=${LUAJIT:-luajit}

fail() {
    echo "make dist: $*" >&2
    exit 1
}

if ! top=$(git rev-parse --show-toplevel 2>/dev/null); then
    fail "$root is not a git checkout: the source rock is made of the files git tracks (git ls-files); run it in a clone"
fi
[ "$top" = "$root" ] || fail "$root is inside the git checkout $top, not its top: run it in a clone of lb"

set -- lb-*.rockspec
[ $# -eq 1 ] && [ -f "$1" ] || fail "expected exactly one lb-*.rockspec at the top, found: $*"
rockspec=$1
git ls-files --error-unmatch "$rockspec" >/dev/null 2>&1 || fail "$rockspec is not tracked by git"

# "<package> <version> <folder>" from the rockspec (Lua assignments, run in
# an empty environment), the folder as luarocks deduces it
# (rockspecs.lua, dir.deduce_base_dir) unless source.dir names it.
info=$("$LUAJIT" - "$rockspec" <<'LUA'
local chunk = assert(loadfile(arg[1]))
local env = {}
setfenv(chunk, env)
chunk()
local src = env.source or {}
local base = (src.url or ""):match("([^/]*)$")
local dir = src.dir
if not dir then
  local exts = { zip = "", git = "", tgz = "", tar = "", gz = "", bz2 = "" }
  dir = base:gsub("%.([^.]*)$", exts):gsub("%.tar", "")
end
io.write(tostring(env.package), " ", tostring(env.version), " ", dir, " ", tostring(src.url))
LUA
) || fail "cannot read $rockspec"
set -- $info
package=$1 version=$2 srcdir=$3 url=$4
name=$(echo "$package" | tr 'A-Z' 'a-z')-$version
[ "$rockspec" = "$name.rockspec" ] || fail "$rockspec declares $package $version: luarocks needs the file to be named $name.rockspec"
# An archive URL (https://.../v1.tar.gz) would need that archive in the
# rock (source.file); only a git source builds from the folder.
case $url in
    git://* | git+*) ;;
    *) fail "$rockspec: source.url $url is not a git URL; this script packs a git checkout" ;;
esac
case $srcdir in
    "" | . | */* | ..) fail "$rockspec: source folder '$srcdir' cannot hold the tree" ;;
esac

deleted=$(git ls-files --deleted)
[ -z "$deleted" ] || fail "tracked files missing from the tree: $deleted"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "make dist: note: tracked files with uncommitted changes go in as they are now"
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
rock=$out/$name.src.rock
stage=$(mktemp -d "${LB_TMPDIR:-${TMPDIR:-/tmp}}/lb-dist.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

mkdir "$stage/$srcdir"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$stage/$srcdir"
cp "$rockspec" "$stage/"
stamp=$(git log -1 --format=%ct 2>/dev/null || date +%s)
find "$stage" -exec touch -h -d "@$stamp" {} +

rm -f "$rock"
(cd "$stage" && find "$rockspec" "$srcdir" | LC_ALL=C sort | TZ=UTC zip -q -X -@ "$rock")
echo "make dist: $rock ($(git ls-files | wc -l) files)"
