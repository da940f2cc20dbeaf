#!/usr/bin/env bash
# Shared step caches (issue 21): two caches on one machine play two machines.
#   A: the warm cache ($HIPERISO_CACHE_DIR, else ~/.cache/hiperiso) that once
#      built the default profile cold; it pushes every step (`image
#      --cache-to`) to a docker-registry started here on localhost.
#   B: an empty cache (downloads not shared) builds the same manifest
#      (`image --cache-from`), pulling every step.
# Prints B's wall time against A's cold build (the sum of the step times
# its records hold, and docs/from-source.md's measured wall time of a cold image),
# the bytes moved, and whether both images are bit-identical.
# Needs docker-registry (apt-get install docker-registry) on PATH, or
# $HIPERISO_DOCKER_REGISTRY. $BIN overrides the hiperiso-build binary.
# With STEP... both machines `build` those steps instead of the image, and
# their output trees are compared (for a warm cache that holds only some).
# Usage: tests/bench/share.sh [STEP...]     (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
registry_bin=${HIPERISO_DOCKER_REGISTRY:-$(command -v docker-registry || true)}
[ -x "$registry_bin" ] || { echo "docker-registry is missing: apt-get install docker-registry" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p hiperiso-build
  BIN=$repo/target/release/hiperiso-build
fi
warm=${HIPERISO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hiperiso}
work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-share.XXXXXX")
# A reads the warm cache through links, so its own small state files
# (locks, the last image) stay out of it.
cache_a=$work/cache-a
mkdir -p "$cache_a"
for d in steps trees tools blobs; do [ -e "$warm/$d" ] && ln -s "$warm/$d" "$cache_a/$d"; done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
YAML
"$registry_bin" serve "$work/registry.yml" 2>"$work/registry.log" &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null; do sleep 0.1; done
url=oci://127.0.0.1:$port/hiperiso/steps

# Both machines trust one fresh key (a copy of the manifest says so).
"$BIN" -q keys --dir "$work/keys" --name bench-1
cp "$repo/hiperiso.toml" "$work/hiperiso.toml"
printf '\n[cache]\ntrusted-keys = ["%s"]\n' "$(cat "$work/keys/cache-signing.ed25519.pub")" >> "$work/hiperiso.toml"
for f in "$repo"/*; do
  case ${f##*/} in hiperiso.toml|target) ;; *) ln -s "$f" "$work/${f##*/}" ;; esac
done
export HIPERISO_SIGNING_KEY=$work/keys/cache-signing.ed25519
hb() { "$BIN" --manifest "$work/hiperiso.toml" "$@"; }
now() { date +%s.%N; }

verb() { if [ $# -gt 0 ]; then echo build "$@"; else echo image -o "$out"; fi; }
t0=$(now)
out=$work/a.img
hb --cache-dir "$cache_a" $(verb "$@") --cache-to "$url" >"$work/a.out" 2>"$work/a.log" || { cat "$work/a.log"; exit 1; }
t1=$(now)
out=$work/b.img
hb --cache-dir "$work/cache-b" $(verb "$@") --cache-from "$url" >"$work/b.out" 2>"$work/b.log" || { cat "$work/b.log"; exit 1; }
t2=$(now)

cold=$(python3 - "$cache_a" "$work/cache-b" <<'PY'
import json, os, sys
a, b = sys.argv[1:]
total = 0.0
for name in os.listdir(os.path.join(b, "steps")):   # the steps B pulled
    with open(os.path.join(a, "steps", name)) as f:
        total += json.load(f)["seconds"]
print(f"{total:.0f}")
PY
)
pulled=$(grep -c '^pulled ' "$work/b.log" || true)
built=$(grep -c '^building ' "$work/b.log" || true)
bytes=$(du -sb "$work/storage" | cut -f1)
b_time=$(echo "$t2 - $t1" | bc -l)
printf 'A: pushed %s step(s) in %.1f s\n' "$(grep -c '^pushed ' "$work/a.log" || true)" "$(echo "$t1 - $t0" | bc -l)"
printf 'B: %s step(s) pulled, %s built, in %.1f s\n' "$pulled" "$built" "$b_time"
printf "A's cold build: %s s of step time in its records\n" "$cold"
printf 'B / A cold: %.4f\n' "$(echo "$b_time / $cold" | bc -l)"
[ $# -gt 0 ] || printf "B / docs/from-source.md's cold image (1966 s wall): %.4f\n" "$(echo "$b_time / 1966" | bc -l)"
printf 'bytes moved: %s (%.1f MB in the registry)\n' "$bytes" "$(echo "$bytes / 1000000" | bc -l)"
if [ $# -gt 0 ]; then
  # `build` prints STEP TREE-PATH; the tree names are content hashes.
  if [ "$(sed 's|.*/||' "$work/a.out")" = "$(sed 's|.*/||' "$work/b.out")" ]; then echo "output trees: identical"; else echo "output trees: DIFFER"; exit 1; fi
elif cmp -s "$work/a.img" "$work/b.img"; then echo "images: bit-identical"; else echo "images: DIFFER"; exit 1; fi
