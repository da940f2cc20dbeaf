#!/bin/sh
# Benchmark of the step machinery (issue 8), on a tools tree made of the
# host's static busybox (apt-get install busybox-static):
#  1. a no-op `hiperiso-build build` (everything cached; target < 0.5 s),
#     against `hiperiso-build summary` (loading the manifest alone);
#  2. a cold step through hiperiso-build against the same commands run by
#     hand with bwrap in the same tools tree (target overhead < 3 %).
# Usage: tests/bench/steps.sh [RUNS]   (from the repository root)
set -eu
runs=${1:-5}
repo=$(pwd)
cargo build --release -q -p hiperiso-build
bin=$repo/target/release/hiperiso-build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tools/bin" "$work/recipes"
cp /bin/busybox "$work/tools/bin/busybox"
for applet in $(/bin/busybox --list); do ln -sf busybox "$work/tools/bin/$applet"; done
cp "$repo/hiperiso.toml" "$work/hiperiso.toml"
# About a second of real work: hash 600 MiB of zeros.
work_cmd='dd if=/dev/zero bs=1M count=600 2>/dev/null | sha256sum > $out/sum'
cat > "$work/recipes/hash.toml" <<TOML
outputs = ["sum"]
commands = ['$work_cmd']
TOML
hb() { "$bin" --manifest "$work/hiperiso.toml" --cache-dir "$work/cache" -q "$@"; }
export HIPERISO_TOOLS_ROOT="$work/tools"
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }

hb build >/dev/null
t0=$(now); i=0; while [ $i -lt "$runs" ]; do hb build >/dev/null; i=$((i+1)); done; t1=$(now)
t2=$(now); i=0; while [ $i -lt "$runs" ]; do hb summary >/dev/null; i=$((i+1)); done; t3=$(now)
noop=$(echo "($t1 - $t0) / $runs" | bc -l)
summary=$(echo "($t3 - $t2) / $runs" | bc -l)
printf 'no-op build:   %.3f s per run (summary: %.3f s; ratio %.2f)\n' "$noop" "$summary" "$(echo "$noop / $summary" | bc -l)"

tool=0; hand=0; i=0
while [ $i -lt "$runs" ]; do
  rm -rf "$work/cache"
  a=$(now); hb build >/dev/null; b=$(now)
  tool=$(echo "$tool + $b - $a" | bc -l)
  rm -rf "$work/out" && mkdir -p "$work/out"
  a=$(now)
  bwrap --unshare-all --die-with-parent --clearenv --ro-bind "$work/tools/bin" /bin \
    --proc /proc --dev /dev --bind "$work/out" /out --setenv out /out --setenv PATH /bin \
    /bin/sh -c "$work_cmd"
  b=$(now)
  hand=$(echo "$hand + $b - $a" | bc -l)
  i=$((i+1))
done
printf 'cold step:     %.3f s via hiperiso-build, %.3f s by hand; overhead %.1f %%\n' \
  "$(echo "$tool / $runs" | bc -l)" "$(echo "$hand / $runs" | bc -l)" "$(echo "($tool / $hand - 1) * 100" | bc -l)"
