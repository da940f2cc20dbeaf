#!/bin/sh
# TEST init for tests/debian_boot.rs: proves the initramfs booted, loads the
# kernel modules in /etc/hiperiso/modules.load order, and runs the packaged QEMU.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "HIPERISO-TEST-INIT-RAN pid=$$"
version=$(cat /etc/hiperiso/kernel-version)
loaded=0
while read -r module; do
    case "$module" in '#'*|'') continue ;; esac
    if insmod "/lib/modules/$version/$module" 2>/tmp/insmod.err; then
        loaded=$((loaded + 1))
    else
        echo "HIPERISO-INSMOD-FAILED $module: $(cat /tmp/insmod.err)"
    fi
done < /etc/hiperiso/modules.load
echo "HIPERISO-MODULES-LOADED $loaded"
[ -c /dev/kvm ] && echo "HIPERISO-DEV-KVM present"
qemu-system-x86_64 --version && echo "HIPERISO-QEMU-RAN"
echo "HIPERISO-OVERLAY $(cat /etc/hiperiso/overlay-test)"
echo "HIPERISO-TEST-DONE"
poweroff -f
