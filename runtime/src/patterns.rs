//! What `hiperiso-log` recognizes in a boot's logs and screens: boot stages
//! and failures, with the domain a failure belongs to and the hint shown
//! for it. The table is data, `patterns.toml` (embedded, parsed once): to
//! teach the analyzer a new boot loader or failure, add an entry there.
//!
//! Matching is a plain substring test on a cleaned line (ANSI escapes and
//! control characters removed, see `serial::clean_line`) of serial output
//! or of screen text.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Boot stages, in the order a successful boot passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The firmware printed its banner or boot manager messages.
    Firmware,
    /// The firmware started a boot option (the CD).
    BootDevice,
    /// A bootloader (GRUB, ISOLINUX, systemd-boot, the EFI stub) ran.
    Bootloader,
    /// The guest kernel started.
    Kernel,
    /// The kernel handed over to init.
    Init,
    /// Userspace came up: a multi-user target, a marker.
    Userspace,
    /// A login prompt (serial or screen).
    Login,
    /// An installer's first question ("Select a language").
    Installer,
    /// The guest powered off, halted or rebooted.
    #[serde(alias = "poweroff")]
    Shutdown,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Firmware => "firmware",
            Stage::BootDevice => "boot_device",
            Stage::Bootloader => "bootloader",
            Stage::Kernel => "kernel",
            Stage::Init => "init",
            Stage::Userspace => "userspace",
            Stage::Login => "login",
            Stage::Installer => "installer",
            Stage::Shutdown => "shutdown",
        }
    }
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// The stick's host side: KVM, the ISO file, QEMU itself.
    Host,
    Firmware,
    Bootloader,
    Kernel,
    /// Init, the initramfs, or userspace services.
    Userspace,
    /// The guest shut itself down or reset before reaching userspace.
    GuestShutdown,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Host => "host",
            Domain::Firmware => "firmware",
            Domain::Bootloader => "bootloader",
            Domain::Kernel => "kernel",
            Domain::Userspace => "userspace",
            Domain::GuestShutdown => "guest_shutdown",
        }
    }
}

/// How bad a failure line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth counting and quoting; the boot may still succeed.
    Error,
    /// The boot cannot go on from here.
    Fatal,
}

/// What a line was read from, when scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The guest's serial console (`serial.log`) and the firmware's debug
    /// log (`firmware.log`).
    Serial,
    /// The guest's screen: `screenshots/NNNN.txt` or its OCR.
    Screen,
    /// QEMU's own messages (`qemu.stderr`) and the QMP events in
    /// `session.json`'s `guest_events`.
    Qemu,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Serial => "serial",
            Source::Screen => "screen",
            Source::Qemu => "qemu",
        }
    }
}

/// Which lines a pattern applies to (`source` in `patterns.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    Serial,
    Screen,
    /// Serial and screen.
    #[default]
    Any,
    Qemu,
}

impl Applies {
    pub fn to(self, source: Source) -> bool {
        matches!(
            (self, source),
            (Applies::Serial | Applies::Any, Source::Serial)
                | (Applies::Screen | Applies::Any, Source::Screen)
                | (Applies::Qemu, Source::Qemu)
        )
    }
}

/// What a row means when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    Stage(Stage),
    Failure {
        id: &'static str,
        domain: Domain,
        severity: Severity,
        hint: Option<&'static str>,
    },
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    pub source: Applies,
    /// Matched as a substring of the cleaned line.
    pub needle: &'static str,
    pub meaning: Meaning,
}

/// The pattern file as embedded.
pub const PATTERNS_TOML: &str = include_str!("patterns.toml");

/// Why the pattern file is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PatternsError {
    #[error("patterns.toml is not valid TOML for the pattern table")]
    Toml(#[source] toml::de::Error),
    #[error("pattern {index} ({text:?}): {problem}")]
    Entry {
        index: usize,
        text: String,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    hints: std::collections::BTreeMap<String, String>,
    pattern: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    text: String,
    #[serde(default)]
    source: Applies,
    stage: Option<Stage>,
    failure: Option<String>,
    domain: Option<Domain>,
    severity: Option<Severity>,
    hint: Option<String>,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Parse a pattern file (the embedded one, or one under test).
pub fn parse(text: &str) -> Result<Vec<Pattern>, PatternsError> {
    let file: File = toml::from_str(text).map_err(PatternsError::Toml)?;
    let mut out = Vec::with_capacity(file.pattern.len());
    for (index, e) in file.pattern.into_iter().enumerate() {
        let bad = |problem: &str| PatternsError::Entry {
            index,
            text: e.text.clone(),
            problem: problem.to_string(),
        };
        if e.text.trim().is_empty() {
            return Err(bad("empty text"));
        }
        let meaning = match (e.stage, &e.failure) {
            (Some(stage), None) => {
                if e.domain.is_some() || e.severity.is_some() || e.hint.is_some() {
                    return Err(bad("a stage takes no domain, severity or hint"));
                }
                Meaning::Stage(stage)
            }
            (None, Some(id)) => {
                let (Some(domain), Some(severity)) = (e.domain, e.severity) else {
                    return Err(bad("a failure needs domain and severity"));
                };
                let hint = match &e.hint {
                    None => None,
                    Some(key) => Some(leak(
                        file.hints
                            .get(key)
                            .ok_or_else(|| bad(&format!("unknown hint {key:?}")))?
                            .clone(),
                    )),
                };
                Meaning::Failure {
                    id: leak(id.clone()),
                    domain,
                    severity,
                    hint,
                }
            }
            _ => return Err(bad("needs exactly one of stage and failure")),
        };
        out.push(Pattern {
            source: e.source,
            needle: leak(e.text),
            meaning,
        });
    }
    Ok(out)
}

/// The table, parsed once. Order matters only for display: every row is
/// tried. The embedded file is checked by a unit test, so a broken one
/// cannot ship.
pub fn table() -> &'static [Pattern] {
    static TABLE: OnceLock<Vec<Pattern>> = OnceLock::new();
    TABLE.get_or_init(|| parse(PATTERNS_TOML).expect("patterns.toml is checked by a unit test"))
}

/// Every row applying to `source` whose needle is in `line`.
pub fn matches(source: Source, line: &str) -> impl Iterator<Item = &'static Pattern> + '_ {
    table()
        .iter()
        .filter(move |p| p.source.to(source) && line.contains(p.needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_file_parses_and_every_entry_is_valid() {
        let table = parse(PATTERNS_TOML).unwrap();
        assert!(table.len() > 50);
        for stage in [
            "GNU GRUB  version 2.06",
            "iPXE 1.21.1+ -- Open Source Network Boot Firmware -- ipxe.org",
            "Memtest86+ v7",
            "CLK/Temp: 2603MHz Pass 23%",
            "Select a language",
        ] {
            assert!(matches(Source::Screen, stage).next().is_some(), "{stage}");
        }
        // SeaBIOS lists the NIC's iPXE ROM on every BIOS boot: not a boot loader.
        let rom = "iPXE (ipxe.org) 00:02.0 CA00 PCI2.10 PnP PMM+BEFD1290+BEF31290 CA00";
        assert!(matches(Source::Screen, rom).next().is_none(), "{rom}");
    }

    #[test]
    fn invalid_entries_are_refused() {
        assert!(parse("[[pattern]]\ntext = \"x\"\n").is_err());
        assert!(parse("[[pattern]]\ntext = \"x\"\nstage = \"nowhere\"\n").is_err());
        let no_hint = "[[pattern]]\ntext = \"x\"\nfailure = \"f\"\ndomain = \"kernel\"\nseverity = \"fatal\"\nhint = \"missing\"\n";
        assert!(parse(no_hint).is_err());
        assert!(parse("[[pattern]]\ntext = \"x\"\nstage = \"poweroff\"\n").is_ok());
    }

    #[test]
    fn failure_ids_are_unique_per_meaning() {
        let mut seen: Vec<(&str, Domain, Severity)> = Vec::new();
        for p in table() {
            if let Meaning::Failure {
                id,
                domain,
                severity,
                ..
            } = p.meaning
            {
                if let Some(other) = seen.iter().find(|s| s.0 == id) {
                    assert_eq!((other.1, other.2), (domain, severity), "{id}");
                }
                seen.push((id, domain, severity));
            }
        }
    }

    #[test]
    fn matching_respects_the_source() {
        let hits: Vec<_> =
            matches(Source::Serial, "[    1.0] Kernel panic - not syncing: x").collect();
        assert_eq!(hits.len(), 1);
        let hits: Vec<_> = matches(
            Source::Serial,
            "Kernel panic - not syncing: Requested init /x failed",
        )
        .collect();
        assert_eq!(hits.len(), 2);
        assert!(
            matches(Source::Qemu, "Kernel panic - not syncing")
                .next()
                .is_none()
        );
    }
}
