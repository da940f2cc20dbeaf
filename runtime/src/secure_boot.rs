//! Whether the host kernel was started with UEFI Secure Boot on, and the
//! kernel's lockdown mode, for `env.txt` and `session.json`.
//!
//! - Secure Boot: the kernel says so at boot, in its log (`Secure boot
//!   enabled|disabled|could not be determined`, from the firmware's
//!   `SecureBoot` variable: Debian's kernel prefixes it with `secureboot: `,
//!   the upstream one of the from-source profile does not). Reading the
//!   variable itself would need efivarfs, a module in Debian's kernel; the
//!   log line needs nothing. No line: the kernel did not boot through UEFI
//!   (a legacy BIOS) or has no EFI support.
//! - Lockdown: securityfs's `lockdown`, e.g. `none [integrity]
//!   confidentiality` (the bracketed mode is the one in force).

/// `enabled`, `disabled`, `unknown` (the firmware did not say) or
/// `not_uefi` (no line: a legacy BIOS boot, or no EFI in the kernel).
pub fn secure_boot_from_kernel_log(log: &str) -> &'static str {
    for line in log.lines() {
        // /dev/kmsg: "6,123,456,-;secureboot: …"; dmesg: "[    0.0] secureboot: …"
        let message = match (line.split_once(';'), line.split_once("] ")) {
            (Some((_, message)), _) | (None, Some((_, message))) => message,
            (None, None) => line,
        };
        let message = message.strip_prefix("secureboot: ").unwrap_or(message);
        if let Some(state) = message.strip_prefix("Secure boot ") {
            return match state.trim() {
                "enabled" => "enabled",
                "disabled" => "disabled",
                _ => "unknown",
            };
        }
    }
    "not_uefi"
}

/// The bracketed mode of securityfs's `lockdown` file (`none`,
/// `integrity`, `confidentiality`); `None` when there is no bracket.
pub fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// The image hiperiso-init boots for `hiperiso.iso=pick` (the GRUB menu
/// that Secure Boot's signed GRUB cannot show): grubenv's default when it
/// names one of `isos`, else the first by name. `isos` are file names in
/// /ISOs/; the result is the `hiperiso.iso` path.
pub fn pick_iso(isos: &[String], default: Option<&str>) -> Option<String> {
    let mut sorted: Vec<&String> = isos.iter().collect();
    sorted.sort();
    let chosen = default
        .and_then(|d| sorted.iter().find(|iso| iso.eq_ignore_ascii_case(d)))
        .or_else(|| sorted.first())?;
    Some(format!("/ISOs/{chosen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_state_from_kmsg_records() {
        let on = "6,1,2,-;Linux version 6.1\n6,88,903,-;secureboot: Secure boot enabled\n";
        assert_eq!(secure_boot_from_kernel_log(on), "enabled");
        let off = "[    0.000000] secureboot: Secure boot disabled\n";
        assert_eq!(secure_boot_from_kernel_log(off), "disabled");
        assert_eq!(
            secure_boot_from_kernel_log("6,1,2,-;secureboot: Secure boot disabled"),
            "disabled"
        );
        assert_eq!(
            secure_boot_from_kernel_log("6,1,2,-;secureboot: Secure boot could not be determined"),
            "unknown"
        );
        assert_eq!(
            secure_boot_from_kernel_log("6,1,2,-;Linux version"),
            "not_uefi"
        );
        // The upstream kernel (from-source profile) has no prefix; a line
        // that merely mentions it is not the kernel's statement.
        assert_eq!(
            secure_boot_from_kernel_log("6,90,905,-;Secure boot enabled\n"),
            "enabled"
        );
        assert_eq!(
            secure_boot_from_kernel_log("[    0.000000] Secure boot disabled"),
            "disabled"
        );
        assert_eq!(
            secure_boot_from_kernel_log("6,91,906,-;foo: Secure boot enabled"),
            "not_uefi"
        );
    }

    #[test]
    fn pick_takes_the_default_else_the_first() {
        let isos = ["b.iso".to_string(), "A.iso".to_string()];
        assert_eq!(
            pick_iso(&isos, Some("b.ISO")).as_deref(),
            Some("/ISOs/b.iso")
        );
        assert_eq!(
            pick_iso(&isos, Some("gone.iso")).as_deref(),
            Some("/ISOs/A.iso")
        );
        assert_eq!(pick_iso(&isos, None).as_deref(), Some("/ISOs/A.iso"));
        assert_eq!(pick_iso(&[], None), None);
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            lockdown_mode("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(lockdown_mode(""), None);
    }
}
