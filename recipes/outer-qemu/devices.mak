# The outer QEMU's devices (configure --without-default-devices
# --with-devices-x86_64=hiperiso-outer): what `hiperiso-build run` and the
# tests put on the outer VM's command line, nothing else.
# q35 (-machine q35[,smm=on]) brings AHCI, pflash (OVMF) and the ICH9 LPC.
CONFIG_Q35=y
# -machine pc: run's KVM probe (a SeaBIOS POST with isa-debugcon)
CONFIG_I440FX=y
CONFIG_ISA_DEBUG=y
# -vga std (run); needs vgabios-stdvga.bin
CONFIG_VGA_PCI=y
# -device qemu-xhci + usb-storage (the stick), usb-tablet (display tests)
CONFIG_USB_XHCI_PCI=y
CONFIG_USB_STORAGE_CLASSIC=y
# -drive if=virtio (the tests' Linux VMs)
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
