#!/usr/bin/env bash
# Images as OCI artifacts (issue 21): an 8 GiB image pushed to a local
# docker-registry (`image --push`), then installed from it onto a loop
# device (`install --image oci://...`: pull, hash check, sparse writes,
# read-back), against the obvious alternative, copying the image file with
# `dd conv=fsync,sparse` (no hash check, no read-back). Prints the image's
# size, the bytes that travel (the layer), and the times.
# Needs root (loop devices) and docker-registry (or $HIPERISO_DOCKER_REGISTRY).
# $BIN overrides the hiperiso-build binary.
# Usage: tests/bench/image_artifact.sh ESP_TREE     (from the repository root;
#        ESP_TREE: a built ESP payload, e.g. a payload-esp tree's esp/)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
esp=$(realpath "$1")
registry_bin=${HIPERISO_DOCKER_REGISTRY:-$(command -v docker-registry || true)}
[ -x "$registry_bin" ] || { echo "docker-registry is missing: apt-get install docker-registry" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p hiperiso-build
  BIN=$repo/target/release/hiperiso-build
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-image-artifact.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/storage" "$port" > "$work/registry.yml"
"$registry_bin" serve "$work/registry.yml" 2>"$work/registry.log" &
registry_pid=$!
dev=
cleanup() { [ -z "$dev" ] || { partx -d "$dev" 2>/dev/null || true; losetup -d "$dev"; }; kill $registry_pid 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null; do sleep 0.1; done
url=oci://127.0.0.1:$port/hiperiso/image:bench
now() { date +%s.%N; }
export DOCKER_CONFIG=$work/docker

"$BIN" -q --manifest "$repo/hiperiso.toml" --cache-dir "$work/cache" image --size 8GiB \
  --esp-tree "$esp" -o "$work/a.img"
t0=$(now)
"$BIN" -q --manifest "$repo/hiperiso.toml" --cache-dir "$work/cache" image --size 8GiB \
  --esp-tree "$esp" -o "$work/a.img" --push "$url"
t1=$(now)
truncate -s 8GiB "$work/stick.raw"
dev=$(losetup -f --show "$work/stick.raw")
t2=$(now)
(cd "$work" && "$BIN" -q install --yes --force --image "$url" "$dev")
t3=$(now)
cmp -n $((8 << 30)) "$work/a.img" "$dev" >/dev/null && same=equal || same=DIFFERENT
t4=$(now)
dd if="$work/a.img" of="$dev" bs=4M conv=fsync,sparse status=none
t5=$(now)
data=$(du -B1 "$work/a.img" | cut -f1)
layer=$(find "$work/storage" -path '*/blobs/*' -name data -size +100k -printf '%s\n' | sort -n | tail -1)
printf 'image: %s bytes, %s bytes of data on disk; the layer that travels: %s bytes (%.4f of the image)\n' \
  "$(stat -c %s "$work/a.img")" "$data" "$layer" "$(echo "$layer / $(stat -c %s "$work/a.img")" | bc -l)"
printf 'image --push (verify, pack, push; image up to date): %.1f s\n' "$(echo "$t1 - $t0" | bc -l)"
printf 'install --image oci:// (pull, unpack, hash check, write, read back): %.1f s; device %s to the image\n' \
  "$(echo "$t3 - $t2" | bc -l)" "$same"
printf 'dd conv=fsync,sparse of the file (no check, no read-back): %.1f s\n' "$(echo "$t5 - $t4" | bc -l)"
printf 'install --image oci:// / dd: %.2f\n' "$(echo "($t3 - $t2) / ($t5 - $t4)" | bc -l)"
