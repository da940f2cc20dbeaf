#!/usr/bin/env bash
# Disk benchmarks (issue 3), measured side by side in one run, as root:
#   1. `hiperiso-build image` of an 8 GiB image versus the shell pipeline
#      truncate + sgdisk + mkfs.exfat + mkfs.vfat + mcopy (same payload);
#   2. `hiperiso-build install` onto a loop device versus
#      `dd bs=4M conv=fsync` of the same 8 GiB image.
# Prints wall times and ratios. Needs about SIZE + 1 GiB free in $TMPDIR:
# the images are sparse, but dd writes every byte into the loop's backing file.
# Usage: tests/bench/disk.sh [SIZE]     (default 8GiB; e.g. 2GiB for a quick run)
set -euo pipefail
cd "$(dirname "$0")/../.."

size=${1:-8GiB}
bytes=$(numfmt --from=iec-i "${size%B}")
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices)" >&2; exit 1; }

cargo build --release -q -p hiperiso-build
bin=$PWD/target/release/hiperiso-build

work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-bench.XXXXXX")
loops=()
cleanup() {
  for l in "${loops[@]}"; do partx -d "$l" 2>/dev/null || true; losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The same payload for both sides: an ESP like the real one, a small data tree.
esp=$work/esp data=$work/data
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/hiperiso/trace" "$data/ISOs" "$data/hiperiso"
head -c 2M  /dev/urandom > "$esp/EFI/BOOT/BOOTX64.EFI"
echo 'set timeout=5' > "$esp/EFI/BOOT/grub.cfg"
head -c 10M /dev/urandom > "$esp/EFI/hiperiso/vmlinuz"
head -c 24M /dev/urandom > "$esp/EFI/hiperiso/initramfs.cpio.zst"
head -c 4M  /dev/urandom > "$esp/EFI/hiperiso/OVMF_CODE.fd"
head -c 528K /dev/urandom > "$esp/EFI/hiperiso/OVMF_VARS.fd"
for l in standard detailed full; do echo "virtio_*" > "$esp/EFI/hiperiso/trace/trace-$l.events"; done
echo '{"hiperiso":{"version":"bench"}}' > "$esp/EFI/hiperiso/build.json"
echo '{}' > "$data/hiperiso/hiperiso.json.example"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
manifest=$work/hiperiso.toml
cat > "$manifest" <<TOML
[image]
name = "bench"
seed = "bench"
size = "$size"
source-date-epoch = 1700000000

[profiles.default]
TOML

echo "== image, $size"
t0=$(now)
"$bin" --manifest "$manifest" -q image -o "$work/ours.img" --esp-tree "$esp" --data-tree "$data"
t1=$(now)
ours_image=$(elapsed "$t0" "$t1")

t0=$(now)
img=$work/shell.img
truncate -s "$bytes" "$img"
esp_mib=$(( ( $(du -sm --apparent-size "$esp" | cut -f1) * 3 / 2 ) + 1 ))
[ "$esp_mib" -lt 33 ] && esp_mib=33
sgdisk -n "1:2048:-$((esp_mib + 1))M" -t 1:0700 -n "2:0:+${esp_mib}M" -t 2:ef00 "$img" >/dev/null
whole=$(losetup -f --show "$img"); loops+=("$whole")
partx -a "$whole"
mkfs.exfat -L HIPERISO "${whole}p1" >/dev/null
mkfs.vfat -F 32 -n HIPERISOEFI "${whole}p2" >/dev/null 2>&1
MTOOLS_SKIP_CHECK=1 mcopy -s -i "${whole}p2" "$esp/EFI" ::/
partx -d "$whole"; losetup -d "$whole"; loops=()
sync -f "$img"
t1=$(now)
shell_image=$(elapsed "$t0" "$t1")
printf 'hiperiso-build image: %6.2f s\nshell pipeline:       %6.2f s\nratio (shell / ours): %sx\n' \
  "$ours_image" "$shell_image" "$(ratio "$shell_image" "$ours_image")"
rm -f "$img"

echo "== install onto a loop device, $size"
target=$work/target.raw
truncate -s "$bytes" "$target"
loop=$(losetup -f --show "$target"); loops+=("$loop")
t0=$(now)
"$bin" --manifest "$manifest" -q install "$loop" --yes --force --esp-tree "$esp" --data-tree "$data"
t1=$(now)
ours_install=$(elapsed "$t0" "$t1")
partx -d "$loop" 2>/dev/null || true
t0=$(now)
dd if="$work/ours.img" of="$loop" bs=4M conv=fsync status=none
t1=$(now)
dd_install=$(elapsed "$t0" "$t1")
printf 'hiperiso-build install: %6.2f s\ndd bs=4M conv=fsync:    %6.2f s\nratio (dd / ours):      %sx\n' \
  "$ours_install" "$dd_install" "$(ratio "$dd_install" "$ours_install")"
