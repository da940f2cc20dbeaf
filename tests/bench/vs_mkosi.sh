#!/usr/bin/env bash
# The debian profile against mkosi 26 (issue 18), in one run, side by side:
#   cold     empty caches, downloads included
#            (ours: `image` with a new --cache-dir; mkosi: `-f build` in a
#            new project directory with an empty CacheDirectory=)
#   warm     a new output from warm caches
#            (ours: `image` to a removed output; mkosi: `-f build`, which
#            rebuilds the image from its Incremental= cache)
#   overlay  one file added to the initramfs overlay
#            (ours: overlays/initramfs/; mkosi: mkosi.extra/), then rebuilt
#   no-op    nothing changed
#            (ours: `image` with the output up to date, a full staleness
#            check; mkosi: `build` without -f, which checks nothing)
# mkosi builds the same package list into a zstd cpio (its nearest output to
# our initramfs); we build the whole stick image (initramfs, ESP, exFAT).
# Every figure is one run; the ratio is ours / mkosi.
#
# mkosi: $MKOSI (a command), else `pip install mkosi==26` into a venv, else
# $MKOSI_SRC (a checkout of github.com/systemd/mkosi at tag v26, run with
# `python3 -m mkosi`). mkosi uses the host's tools (ToolsTree=): its default
# tools tree always adds the debian-debug archive, and LocalMirror= cannot be
# set for it. The Debian mirror: $HIPERISO_DEBIAN_MIRROR, else the
# host's apt sources (the same rule as hiperiso-build).
# FROM_SOURCE=1 also times the default (from-source) profile's no-op
# `image` (its steps must be in the cache: a cold build takes ~30 min).
# Usage: tests/bench/vs_mkosi.sh          (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cargo build --release -q -p hiperiso-build
bin=$repo/target/release/hiperiso-build
work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-vs-mkosi.XXXXXX")
trap 'rm -rf "$work"' EXIT

mirror=${HIPERISO_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
  awk '$2 == "bookworm" { sub("/$", "", $1); print $1; exit }')}
[ -n "$mirror" ] || { echo "no Debian mirror: set HIPERISO_DEBIAN_MIRROR" >&2; exit 1; }

if [ -n "${MKOSI:-}" ]; then
  mkosi() { $MKOSI "$@"; }
elif python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q mkosi==26 2>/dev/null; then
  mkosi() { "$work/venv/bin/mkosi" "$@"; }
elif [ -n "${MKOSI_SRC:-}" ]; then
  mkosi() { PYTHONPATH=$MKOSI_SRC python3 -m mkosi "$@"; }
else
  echo "mkosi 26 is not on this machine's package index: set MKOSI_SRC to a checkout of systemd/mkosi at v26" >&2
  exit 1
fi
echo "$(mkosi --version), mirror $mirror"

# The project both tools build: our repository (its overlays copied, so an
# edit stays here), and an mkosi project with the debian profile's packages.
ours=$work/ours
mkdir -p "$ours"
cp -r "$repo/overlays" "$ours/overlays"
for f in "$repo"/*; do
  case ${f##*/} in overlays|target) ;; *) ln -s "$f" "$ours/${f##*/}" ;; esac
done
packages=$(sed -n '/^\[profiles.debian\]/,/^\[/p' "$repo/hiperiso.toml" |
  sed -n 's/^ *"\([a-z0-9.+-]*\)",.*/\1/p')
mk=$work/mkosi
mkdir -p "$mk/mkosi.cache" "$mk/mkosi.extra"
{
  printf '[Distribution]\nDistribution=debian\nRelease=bookworm\nLocalMirror=%s\n' "$mirror"
  printf '[Output]\nFormat=cpio\nCompressOutput=zstd\n'
  printf '[Build]\nIncremental=yes\nCacheDirectory=mkosi.cache\nToolsTree=\n'
  printf '[Content]\nBootable=no\nPackages=%s\n' "$(echo $packages | tr ' ' ,)"
} >"$mk/mkosi.conf"

hb() { HIPERISO_DEBIAN_MIRROR=$mirror "$bin" --manifest "$ours/hiperiso.toml" --cache-dir "$work/cache" \
  --profile debian -q image -o "$work/ours.img"; }
mk() { (cd "$mk" && mkosi "$@" build) >"$work/mkosi.log" 2>&1 || { tail -20 "$work/mkosi.log"; exit 1; }; }
now() { date +%s.%N; }
declare -A t
timed() {
  local name=$1 t0; shift
  t0=$(now); "$@"; t[$name]=$(echo "$(now) - $t0" | bc -l)
  printf '%-14s %8.2f s\n' "$name" "${t[$name]}"
}

timed ours_cold hb
timed mkosi_cold mk -f
rm "$work/ours.img"
timed ours_warm hb
timed mkosi_warm mk -f
echo "bench $(date +%s%N)" >"$ours/overlays/initramfs-bench"
mkdir -p "$ours/overlays/initramfs/etc" && cp "$ours/overlays/initramfs-bench" "$ours/overlays/initramfs/etc/bench"
mkdir -p "$mk/mkosi.extra/etc" && cp "$ours/overlays/initramfs-bench" "$mk/mkosi.extra/etc/bench"
timed ours_overlay hb
timed mkosi_overlay mk -f
timed ours_noop hb
timed mkosi_noop mk

printf '%-8s %10s %10s %8s\n' "" ours mkosi ratio
for row in cold warm overlay noop; do
  o=${t[ours_$row]} m=${t[mkosi_$row]}
  printf '%-8s %9.2fs %9.2fs %8.3f\n' "$row" "$o" "$m" "$(echo "$o / $m" | bc -l)"
done

if [ "${FROM_SOURCE:-}" = 1 ]; then
  out=$work/default.img
  "$bin" --manifest "$repo/hiperiso.toml" -q image -o "$out"
  t0=$(now)
  "$bin" --manifest "$repo/hiperiso.toml" -q image -o "$out"
  printf 'from-source profile, no-op image: %.3f s\n' "$(echo "$(now) - $t0" | bc -l)"
fi
