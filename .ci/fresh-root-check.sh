#!/usr/bin/env bash
# Proves .ci/install.sh on a machine like a fresh CI machine: a Debian
# bookworm root whose qemu-utils is the newer bookworm-backports one, with
# only bookworm in its apt sources (../shared/tools/fresh-root.sh). The root
# is made once and copied, so every run starts from the fresh state.
# Usage: .ci/fresh-root-check.sh [WORKDIR]   (as root; needs mmdebstrap)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-/var/tmp/hiperiso-fresh-check}
maker=$here/../../shared/tools/fresh-root.sh
[[ -f $maker ]] || { echo "$0: $maker is missing (../shared beside the checkout)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "$0: mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }

base=$(bash "$maker" "$work/base" | tail -1)
root=$work/root
cleanup() {
    for m in dev/pts dev proc sys; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
    rm -rf "$root"
}
cleanup
trap cleanup EXIT
cp -a "$base" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$root/ci"
cp "$here/install.sh" "$here/packages.txt" "$root/ci/"

echo "fresh root: $(chroot "$root" dpkg-query -W -f='${Package} ${Version}' qemu-utils) before the install"
# pip (install.sh's one PyPI package) trusts what this machine trusts, as the
# base image does: a bare bookworm root lacks a TLS proxy's CA.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" bash /ci/install.sh /ci/packages.txt >"$work/install.log" 2>&1 || {
    tail -20 "$work/install.log" >&2
    echo "$0: .ci/install.sh failed in the fresh root (log: $work/install.log)" >&2
    exit 1
}
grep '^aligning' "$work/install.log" || true
# Every package of the list is installed, and the tools the tests run start.
chroot "$root" bash -c '
    set -e
    for p in $(grep -vE "^\s*(#|$)" /ci/packages.txt); do
        dpkg-query -W -f="\${Status}\n" "$p" | grep -q "install ok installed" || { echo "not installed: $p"; exit 1; }
    done
    qemu-system-x86_64 --version | head -1
    qemu-img --version | head -1
    for t in mkfs.exfat fsck.exfat fsck.fat sgdisk xorriso grub-mkimage bwrap; do command -v $t >/dev/null || { echo "missing: $t"; exit 1; }; done
    test -f /usr/share/OVMF/OVMF_CODE_4M.fd
    virt-fw-vars --help >/dev/null
'
echo "fresh-root check: .ci/install.sh installed every package of .ci/packages.txt"
