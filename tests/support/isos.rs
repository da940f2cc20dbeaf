//! Test ISOs built with xorriso: tiny guests that print a marker on COM1
//! and power off, so a test can tell that (and with which firmware) an ISO
//! booted inside hiperiso's VM.
//!
//! - [`bios_iso`]: a no-emulation El Torito boot sector (BIOS only, so the
//!   stick picks SeaBIOS);
//! - [`uefi_iso`]: a standalone GRUB EFI image on an El Torito EFI entry
//!   (so the stick picks OVMF);
//! - [`failing_bios_iso`]: a "boot loader" that cannot find its kernel and
//!   then reports a guest panic on the pvpanic port.
//!
//! Every guest prints `HIPERISO-GUEST-READY` before its marker: the line
//! `hiperiso-log` counts as "userspace reached".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What a guest prints when it got as far as it should.
pub const READY: &str = "HIPERISO-GUEST-READY";

fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What the boot sector does after printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Power off through the ACPI PM1a control port (q35 0x604; 0xB004 too).
    PowerOff,
    /// Wait 3 s, then report a panic on the pvpanic port 0x505.
    Panic,
    /// Halt forever (a guest that never finishes).
    Hang,
}

/// A 2 KiB no-emulation boot image printing `message` on COM1.
pub fn boot_sector_payload(message: &str, after: After) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xFB, // sti
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xBE, 0x00, 0x00, // mov si, message (patched below)
        0xBA, 0xF8, 0x03, // mov dx, 0x3F8
        // print: lodsb; test al, al; jz done; out dx, al; jmp print
        0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,
    ];
    match after {
        After::PowerOff => code.extend([
            0xBA, 0x04, 0x06, // mov dx, 0x604
            0xB8, 0x00, 0x20, // mov ax, 0x2000 (SLP_EN, S5)
            0xEF, // out dx, ax
            0xBA, 0x04, 0xB0, // mov dx, 0xB004
            0xEF, // out dx, ax
        ]),
        After::Panic => code.extend([
            0xB4, 0x86, // mov ah, 0x86 (BIOS wait)
            0xB9, 0x2D, 0x00, // mov cx, 0x002D
            0xBA, 0xC0, 0xC6, // mov dx, 0xC6C0 (3 000 000 us)
            0xCD, 0x15, // int 0x15
            0xBA, 0x05, 0x05, // mov dx, 0x505
            0xB0, 0x01, // mov al, 1 (PVPANIC_PANICKED)
            0xEE, // out dx, al
        ]),
        After::Hang => {}
    }
    code.extend([0xF4, 0xEB, 0xFD]); // hlt; jmp hlt
    let message_addr = 0x7C00 + code.len() as u16;
    code[6..8].copy_from_slice(&message_addr.to_le_bytes());
    code.extend(message.as_bytes());
    code.extend(b"\r\n\0");
    assert!(code.len() <= 2048, "message too long for one boot image");
    code.resize(2048, 0);
    code
}

fn xorriso(root: &Path, out: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(out)
        .args(args)
        .arg(root))
}

/// A BIOS-only ISO whose boot sector prints `message` and then does `after`.
pub fn boot_sector_iso(dir: &Path, name: &str, message: &str, after: After) -> Result<PathBuf> {
    let root = dir.join(format!("{name}.root"));
    fs::create_dir_all(&root)?;
    fs::write(root.join("boot.bin"), boot_sector_payload(message, after))?;
    let iso = dir.join(format!("{name}.iso"));
    xorriso(
        &root,
        &iso,
        &[
            "-V",
            "BIOSTEST",
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ],
    )?;
    Ok(iso)
}

/// A BIOS-only ISO printing `READY marker` and powering off.
pub fn bios_iso(dir: &Path, name: &str, marker: &str) -> Result<PathBuf> {
    boot_sector_iso(dir, name, &format!("{READY} {marker}"), After::PowerOff)
}

/// A BIOS-only ISO whose "boot loader" cannot find its kernel (what
/// ISOLINUX prints), then panics: a failure in the boot loader.
pub fn failing_bios_iso(dir: &Path, name: &str) -> Result<PathBuf> {
    boot_sector_iso(
        dir,
        name,
        "ISOLINUX 6.04 hiperiso-test\r\nCould not find kernel image: /boot/vmlinuz",
        After::Panic,
    )
}

/// A UEFI-only ISO: a standalone GRUB that echoes `READY marker` (OVMF
/// mirrors the console on serial) and powers off.
pub fn uefi_iso(dir: &Path, name: &str, marker: &str) -> Result<PathBuf> {
    let work = dir.join(format!("{name}.work"));
    fs::create_dir_all(&work)?;
    let cfg = work.join("grub.cfg");
    fs::write(&cfg, format!("echo {READY} {marker}\nhalt\n"))?;
    let efi = work.join("BOOTX64.EFI");
    run(Command::new("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "-o"])
        .arg(&efi)
        .args([
            "--install-modules=normal echo halt configfile",
            "--modules=echo halt",
        ])
        .args(["--locales=", "--themes=", "--fonts="])
        .arg(format!("boot/grub/grub.cfg={}", cfg.display())))?;
    let root = work.join("root");
    fs::create_dir_all(&root)?;
    let img = root.join("efi.img");
    run(Command::new("mkfs.fat").arg("-C").arg(&img).arg("2048"))?;
    run(Command::new("mmd")
        .arg("-i")
        .arg(&img)
        .args(["::/EFI", "::/EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg(&efi)
        .arg("::/EFI/BOOT/"))?;
    let iso = dir.join(format!("{name}.iso"));
    xorriso(
        &root,
        &iso,
        &["-V", "UEFITEST", "-e", "efi.img", "-no-emul-boot"],
    )?;
    Ok(iso)
}

/// What [`display_iso`]'s guest prints once its picture is drawn.
pub const DISPLAY_DRAWN: &str = "HIPERISO-DISPLAY-DRAWN";
/// [`display_iso`]'s picture: VGA mode 13h, 320x200 (QEMU shows it as
/// 640x400), in four quadrants of these colours (the standard VGA
/// palette's red, green, blue and white through QEMU's 6-to-8-bit DAC), as
/// `0xRRGGBB`: top left, top right, bottom left, bottom right.
pub const DISPLAY_QUADRANTS: [u32; 4] = [0xA80000, 0x00A800, 0x0000A8, 0xFFFFFF];
/// The guest's screen size as QEMU's display reports it in mode 13h.
pub const DISPLAY_SIZE: (u16, u16) = (640, 400);
const DISPLAY_PALETTE_INDEX: [u8; 4] = [4, 2, 1, 15];

/// A boot sector that prints `READY marker` on COM1, switches to VGA mode
/// 13h and draws [`DISPLAY_QUADRANTS`], prints [`DISPLAY_DRAWN`], then
/// echoes every key typed on the keyboard (BIOS int 16h) to COM1 and
/// powers off after `q`.
pub fn display_payload(marker: &str) -> Vec<u8> {
    const PRINT: [u8; 11] = [
        0xBA, 0xF8, 0x03, // mov dx, 0x3F8
        0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, // lodsb; test; jz; out; jmp
    ];
    let mut code: Vec<u8> = vec![0xFB, 0x31, 0xC0, 0x8E, 0xD8]; // sti; xor ax,ax; mov ds,ax
    let first_message = code.len() + 1;
    code.extend([0xBE, 0, 0]); // mov si, first message
    code.extend(PRINT);
    code.extend([0xB8, 0x13, 0x00, 0xCD, 0x10]); // mov ax, 0x13; int 0x10
    code.extend([0xB8, 0x00, 0xA0, 0x8E, 0xC0, 0x31, 0xFF, 0xFC]); // es = 0xA000; di = 0; cld
    for half in [[0, 1], [2, 3]] {
        code.extend([0xBD, 100, 0]); // mov bp, 100 (rows)
        for quadrant in half {
            // mov al, colour; mov cx, 160; rep stosb
            code.extend([
                0xB0,
                DISPLAY_PALETTE_INDEX[quadrant],
                0xB9,
                160,
                0,
                0xF3,
                0xAA,
            ]);
        }
        code.extend([0x4D, 0x75, 0xEF]); // dec bp; jnz back 17 bytes
    }
    let second_message = code.len() + 1;
    code.extend([0xBE, 0, 0]); // mov si, second message
    code.extend(PRINT);
    code.extend([
        0xB4, 0x00, 0xCD, 0x16, // mov ah, 0; int 0x16 (wait for a key)
        0xBA, 0xF8, 0x03, 0xEE, // mov dx, 0x3F8; out dx, al
        0x3C, b'q', 0x75, 0xF4, // cmp al, 'q'; jne back 12 bytes
        0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF, // ACPI S5 on q35
        0xBA, 0x04, 0xB0, 0xEF, // and on piix4
        0xF4, 0xEB, 0xFD, // hlt; jmp hlt
    ]);
    let first = format!("{READY} {marker}\r\n\0");
    let second = format!("{DISPLAY_DRAWN}\r\n\0");
    let address = 0x7C00 + code.len() as u16;
    code[first_message..first_message + 2].copy_from_slice(&address.to_le_bytes());
    code.extend(first.as_bytes());
    let address = 0x7C00 + code.len() as u16;
    code[second_message..second_message + 2].copy_from_slice(&address.to_le_bytes());
    code.extend(second.as_bytes());
    assert!(code.len() <= 2048, "display payload too long");
    code.resize(2048, 0);
    code
}

/// A BIOS-only ISO with [`display_payload`]'s guest.
pub fn display_iso(dir: &Path, name: &str, marker: &str) -> Result<PathBuf> {
    let root = dir.join(format!("{name}.root"));
    fs::create_dir_all(&root)?;
    fs::write(root.join("boot.bin"), display_payload(marker))?;
    let iso = dir.join(format!("{name}.iso"));
    xorriso(
        &root,
        &iso,
        &[
            "-V",
            "DISPLAYTEST",
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ],
    )?;
    Ok(iso)
}

/// A BIOS-only ISO whose guest prints `READY marker`, switches to VGA mode
/// 13h and then redraws its whole screen in a new colour, forever: the
/// display benchmark's load.
pub fn busy_display_iso(dir: &Path, name: &str, marker: &str) -> Result<PathBuf> {
    let mut code: Vec<u8> = vec![0xFB, 0x31, 0xC0, 0x8E, 0xD8]; // sti; ds = 0
    let message = code.len() + 1;
    code.extend([0xBE, 0, 0]); // mov si, message
    code.extend([
        0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,
    ]);
    code.extend([0xB8, 0x13, 0x00, 0xCD, 0x10]); // mode 13h
    code.extend([0xB8, 0x00, 0xA0, 0x8E, 0xC0, 0xFC, 0x31, 0xDB]); // es = 0xA000; cld; bx = 0
    code.extend([
        0x31, 0xFF, // xor di, di
        0x88, 0xD8, // mov al, bl
        0xB9, 0x00, 0xFA, // mov cx, 64000
        0xF3, 0xAA, // rep stosb
        0xFE, 0xC3, // inc bl
        0xEB, 0xF3, // jmp back 13 bytes
    ]);
    let address = 0x7C00 + code.len() as u16;
    code[message..message + 2].copy_from_slice(&address.to_le_bytes());
    code.extend(format!("{READY} {marker}\r\n\0").as_bytes());
    code.resize(2048, 0);
    let root = dir.join(format!("{name}.root"));
    fs::create_dir_all(&root)?;
    fs::write(root.join("boot.bin"), code)?;
    let iso = dir.join(format!("{name}.iso"));
    xorriso(
        &root,
        &iso,
        &[
            "-V",
            "BUSYTEST",
            "-b",
            "boot.bin",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
        ],
    )?;
    Ok(iso)
}
