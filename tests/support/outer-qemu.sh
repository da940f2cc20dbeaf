#!/usr/bin/env bash
# Builds the QEMU that runs the end-to-end tests' outer VM into DIR (a
# `qemu-system-x86_64` binary and a `qemu` wrapper that adds the firmware
# search path). See tests/support/outer_qemu.rs for why; usage:
#   tests/support/outer-qemu.sh DIR
# Sources: the host suite's qemu source package (Debian's 7.2 with its
# stable-series patches v7.2.N.diff), fetched and verified by apt in a
# private state directory, plus tests/support/outer-qemu.patch. TCG only,
# with the few devices the outer VM uses.
set -euo pipefail
out=${1:?usage: $0 DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "$0: no Debian mirror in the host's apt sources" >&2; exit 1; }
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}

mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$work/sources.list"
apt=(apt-get -q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State=$work/apt" -o "Dir::Cache=$work/apt" -o Debug::NoLocking=1)
"${apt[@]}" update >"$work/apt.log"
(cd "$work" && "${apt[@]}" source --download-only qemu >>"$work/apt.log")

cd "$work/src"
tar -xf "$work"/qemu_*.orig.tar.* --strip-components=1
tar -xf "$work"/qemu_*.debian.tar.*
for diff in $(grep -E '^v[0-9.]+\.diff$' debian/patches/series); do
    patch -p1 -s <"debian/patches/$diff"
done
patch -p1 -s <"$here/outer-qemu.patch"
cat >configs/devices/x86_64-softmmu/hiperiso-outer.mak <<'MAK'
CONFIG_Q35=y
CONFIG_VGA_PCI=y
CONFIG_USB_XHCI_PCI=y
CONFIG_USB_STORAGE_CLASSIC=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
MAK
./configure --target-list=x86_64-softmmu --without-default-features \
    --without-default-devices --with-devices-x86_64=hiperiso-outer \
    --enable-tcg --disable-kvm --disable-docs --disable-tools --disable-werror \
    --disable-install-blobs >"$work/configure.log" 2>&1 ||
    { tail -30 "$work/configure.log" >&2; exit 1; }
ninja -C build qemu-system-x86_64 >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log" >&2; exit 1; }
install -m 755 build/qemu-system-x86_64 "$out/qemu-system-x86_64"
cat >"$out/qemu.partial" <<WRAP
#!/bin/sh
exec "$out/qemu-system-x86_64" -L /usr/share/qemu -L /usr/share/seabios -L /usr/lib/ipxe/qemu "\$@"
WRAP
chmod 755 "$out/qemu.partial"
mv "$out/qemu.partial" "$out/qemu"
