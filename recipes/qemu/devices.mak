# The stick's QEMU devices (configure --without-default-devices
# --with-devices-x86_64=hiperiso): the q35 board and what the runtime and
# users' guests need, nothing else.
CONFIG_Q35=y
# AHCI and ide-cd come with q35 (AHCI_ICH9); pflash (PFLASH_CFI01) with PC.
CONFIG_USB_XHCI_PCI=y
CONFIG_USB_EHCI_PCI=y
CONFIG_USB_STORAGE_CLASSIC=y
CONFIG_USB_STORAGE_BOT=y
CONFIG_USB_STORAGE_UAS=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_SCSI=y
CONFIG_VIRTIO_RNG=y
CONFIG_E1000_PCI=y
CONFIG_E1000E_PCI_EXPRESS=y
CONFIG_VGA_PCI=y
CONFIG_BOCHS_DISPLAY=y
CONFIG_TPM_TIS_ISA=y
CONFIG_TPM_CRB=y
# -device pvpanic and isa-debugcon (firmware.log) in the runtime's command line
CONFIG_PVPANIC_ISA=y
CONFIG_ISA_DEBUG=y
