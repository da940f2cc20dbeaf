#!/usr/bin/env bash
# Disk benchmarks, measured side by side in one run, as root:
#   1. `hiperiso-build image` versus the shell pipeline truncate + sgdisk +
#      mkfs.exfat + mkfs.vfat + mcopy (same payload), at each SIZE; our
#      image is then checked with sgdisk -v, fsck.exfat and fsck.fat;
#   2. `hiperiso-build install` onto a loop device versus dd of our image,
#      `dd bs=4M conv=fsync,sparse` and plain `dd bs=4M conv=fsync`, at
#      INSTALL_SIZE (plain dd writes every byte into the loop's backing
#      file; it is skipped when $TMPDIR has not that much free).
# The partitions are offset loop devices (losetup -o/--sizelimit), so the
# host's kernel needs no partition-table parser.
# Prints wall times (image: medians of REPEAT runs, default 5) and ratios.
# Usage: tests/bench/disk.sh [SIZE...]   (default: 8GiB 64GiB)
#        INSTALL_SIZE=2GiB tests/bench/disk.sh 8GiB   (install: default 8GiB)
set -euo pipefail
cd "$(dirname "$0")/../.."

sizes=("${@:-8GiB}")
[ $# -gt 0 ] || sizes=(8GiB 64GiB)
install_size=${INSTALL_SIZE:-8GiB}
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices)" >&2; exit 1; }

cargo build --release -q -p hiperiso-build
bin=$PWD/target/release/hiperiso-build

work=$(mktemp -d "${TMPDIR:-/tmp}/hiperiso-bench.XXXXXX")
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bytes_of() { numfmt --from=iec-i "${1%B}"; }
# An offset loop device over partition N of IMAGE (from sgdisk's table).
part_loop() {
  local info first last
  info=$(sgdisk -i "$2" "$1" 2>/dev/null)
  first=$(awk '/^First sector:/ {print $3}' <<<"$info")
  last=$(awk '/^Last sector:/ {print $3}' <<<"$info")
  losetup -f --show -o $((first * 512)) --sizelimit $(((last - first + 1) * 512)) "$1"
}

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
size = "8GiB"
source-date-epoch = 1700000000

[profiles.default]
TOML

# The median of the given times.
median() { printf '%s\n' "$@" | sort -g | awk '{ t[NR] = $1 } END { print t[int((NR + 1) / 2)] }'; }
shell_image() {
  local img=$work/shell.img bytes=$1 esp_mib p1 p2
  rm -f "$img"
  truncate -s "$bytes" "$img"
  esp_mib=$(( ( $(du -sm --apparent-size "$esp" | cut -f1) * 3 / 2 ) + 1 ))
  [ "$esp_mib" -lt 33 ] && esp_mib=33
  sgdisk -n "1:2048:-$((esp_mib + 1))M" -t 1:0700 -n "2:0:+${esp_mib}M" -t 2:ef00 "$img" >/dev/null
  p1=$(part_loop "$img" 1); loops+=("$p1")
  p2=$(part_loop "$img" 2); loops+=("$p2")
  mkfs.exfat -L HIPERISO "$p1" >/dev/null
  mkfs.vfat -F 32 -n HIPERISOEFI "$p2" >/dev/null 2>&1
  MTOOLS_SKIP_CHECK=1 mcopy -s -i "$p2" "$esp/EFI" ::/ 2>/dev/null
  losetup -d "$p1" "$p2"; loops=()
  sync -f "$img"
}

# Each side REPEAT times (default 5), in turn; medians are compared.
repeat=${REPEAT:-5}
for size in "${sizes[@]}"; do
  bytes=$(bytes_of "$size")
  echo "== image, $size (median of $repeat, in turn)"
  ours=() shell=()
  for _ in $(seq "$repeat"); do
    rm -f "$work/ours.img"
    t0=$(now)
    "$bin" --manifest "$manifest" -q image -o "$work/ours.img" --size "$size" --esp-tree "$esp" --data-tree "$data"
    t1=$(now)
    ours+=("$(elapsed "$t0" "$t1")")
    t0=$(now)
    shell_image "$bytes"
    t1=$(now)
    shell+=("$(elapsed "$t0" "$t1")")
  done
  ours_image=$(median "${ours[@]}")
  shell_image=$(median "${shell[@]}")
  printf 'hiperiso-build image: %6.2f s\nshell pipeline:       %6.2f s\nratio (shell / ours): %sx\n' \
    "$ours_image" "$shell_image" "$(ratio "$shell_image" "$ours_image")"
  rm -f "$work/shell.img"

  # Our image passes the usual checkers.
  sgdisk -v "$work/ours.img" | grep -q "No problems found" || { sgdisk -v "$work/ours.img"; exit 1; }
  p1=$(part_loop "$work/ours.img" 1); loops+=("$p1")
  p2=$(part_loop "$work/ours.img" 2); loops+=("$p2")
  fsck.exfat -n "$p1" >/dev/null
  fsck.fat -n "$p2" >/dev/null
  losetup -d "$p1" "$p2"; loops=()
  echo "checked: sgdisk -v, fsck.exfat -n, fsck.fat -n"
  [ "$size" = "$install_size" ] || rm -f "$work/ours.img"
done

echo "== install onto a loop device, $install_size"
bytes=$(bytes_of "$install_size")
[ -f "$work/ours.img" ] ||
  "$bin" --manifest "$manifest" -q image -o "$work/ours.img" --size "$install_size" --esp-tree "$esp" --data-tree "$data"
target=$work/target.raw
truncate -s "$bytes" "$target"
loop=$(losetup -f --show "$target"); loops+=("$loop")
t0=$(now)
"$bin" --manifest "$manifest" -q install "$loop" --yes --force --esp-tree "$esp" --data-tree "$data"
t1=$(now)
ours_install=$(elapsed "$t0" "$t1")
printf 'hiperiso-build install:        %6.2f s\n' "$ours_install"
blkdiscard "$loop" 2>/dev/null || { losetup -d "$loop"; rm -f "$target"; truncate -s "$bytes" "$target"; loop=$(losetup -f --show "$target"); loops=("$loop"); }
t0=$(now)
dd if="$work/ours.img" of="$loop" bs=4M conv=fsync,sparse status=none
t1=$(now)
sparse_install=$(elapsed "$t0" "$t1")
printf 'dd bs=4M conv=fsync,sparse:    %6.2f s   ratio (dd sparse / ours): %sx\n' \
  "$sparse_install" "$(ratio "$sparse_install" "$ours_install")"
free=$(( $(df --output=avail -B1 "$work" | tail -1) ))
if [ "$free" -gt $((bytes + (4 << 30))) ]; then
  t0=$(now)
  dd if="$work/ours.img" of="$loop" bs=4M conv=fsync status=none
  t1=$(now)
  dd_install=$(elapsed "$t0" "$t1")
  printf 'dd bs=4M conv=fsync:           %6.2f s   ratio (dd / ours):        %sx\n' \
    "$dd_install" "$(ratio "$dd_install" "$ours_install")"
else
  echo "plain dd skipped: $free bytes free in $work, it would write $bytes"
fi
