#!/bin/sh
# Benchmark of the step machinery (issue 8), on the repository's manifest,
# lock and recipes (the busybox step on the tools tree of hiperiso.lock):
#  1. a no-op `hiperiso-build image` (default profile: the busybox step is
#     cached, the image file is up to date; target < 0.5 s), against
#     writing the same image again (its file touched) and against
#     `hiperiso-build summary` (loading the manifest alone);
#  2. building busybox through hiperiso-build (`clean`, then `build
#     busybox`: sandbox, key, cache commit) against the recipe's commands
#     run by hand with the same bubblewrap in the same tools tree (target
#     overhead < 3 %). The two alternate, so load changes hit both.
# The first run fetches the tools tree and busybox's source into the cache
# ($HIPERISO_CACHE_DIR, else the default one).
# Usage: tests/bench/steps.sh [RUNS]   (from the repository root)
set -eu
runs=${1:-3}
repo=$(pwd)
cargo build --release -q -p hiperiso-build
bin=$repo/target/release/hiperiso-build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hb() { "$bin" --manifest "$repo/hiperiso.toml" -q "$@"; }
now() { date +%s.%N; }
ratio() { echo "$1 / $2" | bc -l; }

# 1. No-op image.
image=$work/hiperiso.img
hb image -o "$image"
t0=$(now); i=0; while [ $i -lt "$runs" ]; do hb image -o "$image"; i=$((i+1)); done; t1=$(now)
t2=$(now); i=0; while [ $i -lt "$runs" ]; do touch "$image"; hb image -o "$image"; i=$((i+1)); done; t3=$(now)
t4=$(now); i=0; while [ $i -lt "$runs" ]; do hb summary >/dev/null; i=$((i+1)); done; t5=$(now)
noop=$(echo "($t1 - $t0) / $runs" | bc -l)
full=$(echo "($t3 - $t2) / $runs" | bc -l)
summary=$(echo "($t5 - $t4) / $runs" | bc -l)
printf 'no-op image:   %.3f s per run; writing it again %.3f s (ratio %.3f); summary %.3f s (ratio %.2f)\n' \
  "$noop" "$full" "$(ratio "$noop" "$full")" "$summary" "$(ratio "$noop" "$summary")"

# 2. busybox through the tool and by hand.
cache=$("$bin" --manifest "$repo/hiperiso.toml" summary | sed -n 's/^cache *//p' | head -1)
[ -n "$cache" ] || cache=${HIPERISO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hiperiso}
tools=$(ls -td "$cache"/tools/*/ | head -1)
tools=${tools%/}
source_sha=$(sed -n '/^\[sources.busybox\]/,/^\[/s/^sha256 = "\(.*\)"/\1/p' "$repo/hiperiso.toml")
tarball=$cache/blobs/sha256/$source_sha
jobs=$(nproc)
[ -f "$tarball" ] || { echo "no busybox source at $tarball" >&2; exit 1; }
[ -x "$tools/usr/bin/bwrap" ] || { echo "no tools tree at $tools" >&2; exit 1; }
loader=$tools/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
libs=$tools/lib/x86_64-linux-gnu:$tools/usr/lib/x86_64-linux-gnu
# By hand in a directory beside the cache (same file system as the tool's
# work directories).
hand_dir=$cache/bench-by-hand
trap 'rm -rf "$work" "$hand_dir"' EXIT
by_hand() {
  rm -rf "$work/hand" "$hand_dir" && mkdir -p "$hand_dir" && ln -s "$hand_dir" "$work/hand" && mkdir -p "$work/hand/tmp/build" "$work/hand/tmp/out" "$work/hand/in"
  cp "$tarball" "$work/hand/in/busybox.tar.bz2"
  cp "$repo/recipes/busybox/config" "$work/hand/in/config"
  "$loader" --library-path "$libs" "$tools/usr/bin/bwrap" \
    --unshare-all --die-with-parent --clearenv --ro-bind "$tools" / \
    --proc /proc --dev /dev --bind "$work/hand/tmp" /tmp --ro-bind "$work/hand/in" /tmp/in \
    --chdir /tmp/build --setenv PATH /usr/sbin:/usr/bin:/sbin:/bin --setenv LC_ALL C.UTF-8 \
    --setenv SOURCE_DATE_EPOCH 1704067200 --setenv TZ UTC --setenv HOME /tmp \
    /bin/sh -ec "umask 022
      tar -xjf /tmp/in/busybox.tar.bz2 --strip-components=1
      cp /tmp/in/config .config
      make oldconfig </dev/null >/dev/null
      cmp .config /tmp/in/config
      make -j$jobs busybox
      install -D -m 755 busybox /tmp/out/bin/busybox
      /tmp/out/bin/busybox --list > /tmp/out/applets" >"$work/hand.log" 2>&1
}
through_tool() {
  hb clean >/dev/null
  a=$(now); hb build busybox >/dev/null; b=$(now)
  tool=$(echo "$tool + $b - $a" | bc -l)
}
by_hand_timed() {
  a=$(now); by_hand; b=$(now)
  hand=$(echo "$hand + $b - $a" | bc -l)
}
# Alternate which goes first, so page-cache and load changes hit both.
tool=0; hand=0; i=0
while [ $i -lt "$runs" ]; do
  if [ $((i % 2)) -eq 0 ]; then through_tool; by_hand_timed; else by_hand_timed; through_tool; fi
  i=$((i+1))
done
cmp "$work/hand/tmp/out/bin/busybox" "$(hb build busybox | cut -d' ' -f2)/bin/busybox" \
  && echo "by hand and through hiperiso-build: the same busybox binary"
printf 'busybox build: %.1f s via hiperiso-build, %.1f s by hand (mean of %d); ratio %.3f, overhead %.1f %%\n' \
  "$(echo "$tool / $runs" | bc -l)" "$(echo "$hand / $runs" | bc -l)" "$runs" \
  "$(ratio "$tool" "$hand")" "$(echo "($tool / $hand - 1) * 100" | bc -l)"
