//! The kernel command line GRUB passes to `hiperiso-init` (DESIGN.md §5).
//!
//! Parsing never fails: a bad value becomes a warning and the default is
//! used, because a typo in the menu must not stop a boot.

use hiperiso_stick::boot::cmdline;
use std::fmt;
use std::str::FromStr;

/// `hiperiso.trace=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TraceLevel {
    None,
    Standard,
    Detailed,
    Full,
}

impl TraceLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceLevel::None => "none",
            TraceLevel::Standard => "standard",
            TraceLevel::Detailed => "detailed",
            TraceLevel::Full => "full",
        }
    }
}

impl FromStr for TraceLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "off" => Ok(TraceLevel::None),
            "standard" => Ok(TraceLevel::Standard),
            "detailed" => Ok(TraceLevel::Detailed),
            "full" => Ok(TraceLevel::Full),
            other => Err(format!(
                "unknown trace level {other:?} (expected none, standard, detailed or full)"
            )),
        }
    }
}

impl fmt::Display for TraceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `hiperiso.after=`: what to do when the session is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAction {
    Poweroff,
    Reboot,
    /// Reboot into the GRUB menu and wait there (no timeout).
    Menu,
    /// Drop into a busybox shell on the console.
    Shell,
}

impl AfterAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterAction::Poweroff => "poweroff",
            AfterAction::Reboot => "reboot",
            AfterAction::Menu => "menu",
            AfterAction::Shell => "shell",
        }
    }
}

impl FromStr for AfterAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poweroff" => Ok(AfterAction::Poweroff),
            "reboot" => Ok(AfterAction::Reboot),
            "menu" => Ok(AfterAction::Menu),
            "shell" => Ok(AfterAction::Shell),
            other => Err(format!(
                "unknown after action {other:?} (expected poweroff, reboot, menu or shell)"
            )),
        }
    }
}

/// How to find a partition: `UUID=...`, `LABEL=...`, a device path, or
/// `ESPDISK:<n>` (partition n of the disk holding `hiperiso.esp=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSpec {
    Uuid(String),
    Label(String),
    Device(String),
    OnEspDisk(u32),
}

impl FromStr for PartitionSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(uuid) = s.strip_prefix("UUID=") {
            Ok(PartitionSpec::Uuid(uuid.to_string()))
        } else if let Some(label) = s.strip_prefix("LABEL=") {
            Ok(PartitionSpec::Label(label.to_string()))
        } else if s.starts_with("/dev/") {
            Ok(PartitionSpec::Device(s.to_string()))
        } else if let Some(number) = s.strip_prefix(cmdline::DATA_ON_ESP_DISK) {
            match number.parse::<u32>() {
                Ok(n) if n > 0 => Ok(PartitionSpec::OnEspDisk(n)),
                _ => Err(format!(
                    "partition {s:?}: {} takes a partition number from 1",
                    cmdline::DATA_ON_ESP_DISK
                )),
            }
        } else {
            Err(format!(
                "partition {s:?} is neither UUID=..., LABEL=..., /dev/... nor {}<n>",
                cmdline::DATA_ON_ESP_DISK
            ))
        }
    }
}

impl fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionSpec::Uuid(u) => write!(f, "UUID={u}"),
            PartitionSpec::Label(l) => write!(f, "LABEL={l}"),
            PartitionSpec::Device(d) => f.write_str(d),
            PartitionSpec::OnEspDisk(n) => write!(f, "{}{n}", cmdline::DATA_ON_ESP_DISK),
        }
    }
}

/// The data partition's default label (DESIGN.md §4), used when GRUB gave none.
pub const DEFAULT_DATA_LABEL: &str = "HIPERISO";

/// Everything `hiperiso-init` reads from `/proc/cmdline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCmdline {
    /// `hiperiso.iso=/ISOs/<file>`, relative to the data partition's root.
    pub iso: Option<String>,
    /// `hiperiso.data=`; defaults to `LABEL=HIPERISO`.
    pub data: PartitionSpec,
    /// `hiperiso.esp=`: the ESP holding firmware and trace event files.
    pub esp: Option<PartitionSpec>,
    /// `hiperiso_fallback=1`: use TCG when KVM cannot create a VM.
    pub fallback: bool,
    /// `hiperiso.trace=`; `None` means "use hiperiso.json's default".
    pub trace: Option<TraceLevel>,
    /// `hiperiso.after=`; `None` means "use hiperiso.json's default".
    pub after: Option<AfterAction>,
    /// `hiperiso.shell=1`: rescue shell right after the data partition is mounted.
    pub rescue_shell: bool,
    /// `hiperiso.wait=<seconds>`: how long to wait for the data partition.
    pub wait_seconds: Option<u32>,
    /// `hiperiso.pause=<seconds>`: how long a failure stays on screen before
    /// the after action (default 15).
    pub pause_seconds: Option<u32>,
    /// `hiperiso.display=0`: do not show the guest on the host's
    /// framebuffer (no VNC server, no input grab); default on.
    pub display: bool,
    /// Problems found while parsing, reported in the session and on screen.
    pub warnings: Vec<String>,
}

impl Default for KernelCmdline {
    fn default() -> Self {
        KernelCmdline {
            iso: None,
            data: PartitionSpec::Label(DEFAULT_DATA_LABEL.to_string()),
            esp: None,
            fallback: false,
            trace: None,
            after: None,
            rescue_shell: false,
            wait_seconds: None,
            pause_seconds: None,
            display: true,
            warnings: Vec::new(),
        }
    }
}

/// Split a command line into words, honouring double quotes as the kernel does
/// (`hiperiso.iso="/ISOs/my file.iso"` is one word without the quotes).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            c => {
                current.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(current);
    }
    words
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "yes" | "true" | "on" | "" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

impl KernelCmdline {
    pub fn parse(line: &str) -> Self {
        let mut cmd = KernelCmdline::default();
        for word in split_words(line) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            let key_is_ours = key.starts_with("hiperiso.") || key.starts_with("hiperiso_");
            if !key_is_ours {
                continue;
            }
            let value_str = value.unwrap_or("");
            let mut warn = |msg: String| cmd.warnings.push(format!("kernel command line: {msg}"));
            match key {
                cmdline::ISO => {
                    if value_str.is_empty() {
                        warn("hiperiso.iso is empty".into());
                    } else if value_str.split('/').any(|part| part == "..") {
                        warn(format!("hiperiso.iso={value_str:?} must not contain '..'"));
                    } else if value_str.starts_with('/') {
                        cmd.iso = Some(value_str.to_string());
                    } else {
                        cmd.iso = Some(format!("/{value_str}"));
                    }
                }
                cmdline::DATA => match value_str.parse() {
                    Ok(spec) => cmd.data = spec,
                    Err(e) => warn(format!("hiperiso.data: {e}")),
                },
                cmdline::ESP => match value_str.parse() {
                    Ok(spec) => cmd.esp = Some(spec),
                    Err(e) => warn(format!("hiperiso.esp: {e}")),
                },
                cmdline::FALLBACK | cmdline::FALLBACK_DOTTED => match parse_bool(value_str) {
                    Some(b) => cmd.fallback = b,
                    None => warn(format!("{key}={value_str:?} is not 0 or 1")),
                },
                cmdline::SHELL => match parse_bool(value_str) {
                    Some(b) => cmd.rescue_shell = b,
                    None => warn(format!("{key}={value_str:?} is not 0 or 1")),
                },
                cmdline::TRACE => match value_str.parse() {
                    Ok(level) => cmd.trace = Some(level),
                    Err(e) => warn(format!("hiperiso.trace: {e}")),
                },
                cmdline::AFTER => match value_str.parse() {
                    Ok(action) => cmd.after = Some(action),
                    Err(e) => warn(format!("hiperiso.after: {e}")),
                },
                cmdline::WAIT => match value_str.parse() {
                    Ok(secs) => cmd.wait_seconds = Some(secs),
                    Err(_) => warn(format!("hiperiso.wait={value_str:?} is not a number")),
                },
                cmdline::PAUSE => match value_str.parse() {
                    Ok(secs) => cmd.pause_seconds = Some(secs),
                    Err(_) => warn(format!("hiperiso.pause={value_str:?} is not a number")),
                },
                cmdline::DISPLAY => match parse_bool(value_str) {
                    Some(b) => cmd.display = b,
                    None => warn(format!("{key}={value_str:?} is not 0 or 1")),
                },
                other => warn(format!("unknown option {other:?} ignored")),
            }
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_line() {
        let cmd = KernelCmdline::parse(
            "BOOT_IMAGE=/EFI/hiperiso/vmlinuz hiperiso.iso=/ISOs/debian.iso \
             hiperiso.data=UUID=1234-ABCD hiperiso_fallback=1 hiperiso.trace=full \
             hiperiso.after=reboot console=ttyS0 console=tty0 quiet hiperiso.display=0",
        );
        assert!(!cmd.display);
        assert_eq!(cmd.iso.as_deref(), Some("/ISOs/debian.iso"));
        assert_eq!(cmd.data, PartitionSpec::Uuid("1234-ABCD".into()));
        assert!(cmd.fallback);
        assert_eq!(cmd.trace, Some(TraceLevel::Full));
        assert_eq!(cmd.after, Some(AfterAction::Reboot));
        assert!(cmd.warnings.is_empty(), "{:?}", cmd.warnings);
    }

    #[test]
    fn defaults() {
        let cmd = KernelCmdline::parse("root=/dev/sda1 quiet");
        assert_eq!(cmd, KernelCmdline::default());
        assert_eq!(cmd.data, PartitionSpec::Label("HIPERISO".into()));
        assert!(!cmd.fallback);
        assert!(cmd.display);
    }

    #[test]
    fn quoted_values_and_relative_iso() {
        let cmd =
            KernelCmdline::parse(r#"hiperiso.iso="ISOs/my file.iso" hiperiso.data=LABEL=STICK"#);
        assert_eq!(cmd.iso.as_deref(), Some("/ISOs/my file.iso"));
        assert_eq!(cmd.data, PartitionSpec::Label("STICK".into()));
    }

    #[test]
    fn data_on_the_esps_disk() {
        let cmd = KernelCmdline::parse("hiperiso.iso=pick hiperiso.data=ESPDISK:1");
        assert_eq!(cmd.data, PartitionSpec::OnEspDisk(1));
        assert_eq!(cmd.data.to_string(), "ESPDISK:1");
        assert!(cmd.warnings.is_empty(), "{:?}", cmd.warnings);
        for bad in ["ESPDISK:0", "ESPDISK:", "ESPDISK:one"] {
            let cmd = KernelCmdline::parse(&format!("hiperiso.data={bad}"));
            assert_eq!(cmd.data, PartitionSpec::Label("HIPERISO".into()), "{bad}");
            assert_eq!(cmd.warnings.len(), 1, "{bad}: {:?}", cmd.warnings);
        }
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let cmd = KernelCmdline::parse(
            "hiperiso.trace=loud hiperiso.after=explode hiperiso_fallback=maybe \
             hiperiso.data=sda1 hiperiso.iso=/ISOs/../etc/passwd hiperiso.colour=red",
        );
        assert_eq!(cmd.trace, None);
        assert_eq!(cmd.after, None);
        assert!(!cmd.fallback);
        assert_eq!(cmd.iso, None);
        assert_eq!(cmd.data, PartitionSpec::Label("HIPERISO".into()));
        assert_eq!(cmd.warnings.len(), 6, "{:#?}", cmd.warnings);
        assert!(cmd.warnings.iter().any(|w| w.contains("loud")));
        assert!(cmd.warnings.iter().any(|w| w.contains("hiperiso.colour")));
    }

    #[test]
    fn split_words_quotes() {
        assert_eq!(
            split_words(r#"a "b c" d="e f"  g"#),
            vec!["a", "b c", "d=e f", "g"]
        );
        assert_eq!(split_words(r#"x="""#), vec!["x="]);
    }
}
