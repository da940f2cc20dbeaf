//! `hiperiso/hiperiso.json` on the data partition: runtime defaults
//! (`control`), extended options (`control_ext`) and per-image
//! `iso_overrides` keyed by glob.
//!
//! Loading never fails: broken JSON gives the defaults plus an error that
//! names the line and column; unknown keys and bad values give warnings.

use crate::cmdline::{AfterAction, TraceLevel};
use crate::glob;
use serde_json::Value;

mod reader;
use reader::Reader;

/// Firmware for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    Bios,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Uefi => "uefi",
            Firmware::Bios => "bios",
        }
    }
}

/// `control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Guest RAM in MiB.
    pub default_ram: u32,
    pub default_cpus: u32,
    pub default_trace_level: TraceLevel,
    /// GRUB menu timeout in seconds (-1: wait forever).
    pub menu_timeout: i32,
    /// File name under `/ISOs/` GRUB selects by default.
    pub default_image: Option<String>,
    pub after: AfterAction,
    /// Seconds between screenshots (0: none).
    pub screenshot_interval: u32,
    /// Stop the guest after this many seconds (0: never).
    pub session_timeout: u32,
}

/// `control_ext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlExt {
    /// User-mode networking (QEMU's slirp, an e1000e NIC) for every image:
    /// on by default, as `mkosi vm` and quickemu do; `false` here or in an
    /// override turns it off.
    pub net: bool,
    /// Record the guest's network traffic to `network.pcap`.
    pub net_dump: bool,
    /// Use TCG when KVM is unusable, as `hiperiso_fallback=1` does.
    pub fallback_tcg: bool,
    /// Attach isa-debugcon (port 0x402) and record `firmware.log`.
    pub firmware_log: bool,
}

/// One `iso_overrides` entry; `None` fields leave the default alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsoOverride {
    pub ram: Option<u32>,
    pub cpus: Option<u32>,
    pub tpm: Option<bool>,
    pub cpu_features: Option<String>,
    pub firmware: Option<Firmware>,
    pub net: Option<bool>,
    pub net_dump: Option<bool>,
    pub trace_level: Option<TraceLevel>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub control: Control,
    pub control_ext: ControlExt,
    /// (glob, override) in file order as parsed (sorted by key).
    pub iso_overrides: Vec<(String, IsoOverride)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            control: Control {
                default_ram: 2048,
                default_cpus: 2,
                default_trace_level: TraceLevel::Standard,
                menu_timeout: 10,
                default_image: None,
                after: AfterAction::Poweroff,
                screenshot_interval: 5,
                session_timeout: 0,
            },
            control_ext: ControlExt {
                net: true,
                net_dump: false,
                fallback_tcg: false,
                firmware_log: true,
            },
            iso_overrides: Vec::new(),
        }
    }
}

/// A JSON syntax error, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
pub struct ConfigSyntaxError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The result of loading: always a usable config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
    /// Set when the file was not valid JSON (the defaults are in use).
    pub error: Option<ConfigSyntaxError>,
}

/// The settings for one image after applying matching overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub ram_mb: u32,
    pub cpus: u32,
    pub tpm: bool,
    pub cpu_features: Option<String>,
    /// Forced firmware; `None`: decide from the El Torito catalog.
    pub firmware: Option<Firmware>,
    pub net: bool,
    pub net_dump: bool,
    pub trace_level: TraceLevel,
    /// The globs that matched, in the order they were applied.
    pub matched: Vec<String>,
}

impl Config {
    /// Parse `text` (the content of `file`, named in messages).
    pub fn load(file: &str, text: &str) -> LoadedConfig {
        let mut warnings = Vec::new();
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let message = e.to_string();
                let message = match message.rfind(" at line ") {
                    Some(cut) => message[..cut].to_string(),
                    None => message,
                };
                return LoadedConfig {
                    config: Config::default(),
                    warnings,
                    error: Some(ConfigSyntaxError {
                        file: file.to_string(),
                        line: e.line(),
                        column: e.column(),
                        message,
                    }),
                };
            }
        };
        let mut config = Config::default();
        let Some(top) = value.as_object() else {
            warnings.push(format!(
                "{file}: the top level must be an object; using defaults"
            ));
            return LoadedConfig {
                config,
                warnings,
                error: None,
            };
        };
        let mut reader = Reader {
            file,
            warnings: &mut warnings,
        };
        for (key, value) in top {
            match key.as_str() {
                "control" => reader.control(value, &mut config.control),
                "control_ext" => reader.control_ext(value, &mut config.control_ext),
                "iso_overrides" => config.iso_overrides = reader.overrides(value),
                k if k.starts_with('_') || k == "$schema" || k == "comment" => {}
                other => reader.warn(other, "unknown key ignored"),
            }
        }
        LoadedConfig {
            config,
            warnings,
            error: None,
        }
    }

    /// Settings for the image `iso` (e.g. `/ISOs/sub/win11.iso`): defaults,
    /// then every matching override from least to most specific glob.
    /// A glob without `/` matches the file name; with `/`, the path below the
    /// data partition's root (without the leading `/`).
    pub fn settings_for(&self, iso: &str) -> EffectiveSettings {
        let mut settings = EffectiveSettings {
            ram_mb: self.control.default_ram,
            cpus: self.control.default_cpus,
            tpm: false,
            cpu_features: None,
            firmware: None,
            net: self.control_ext.net,
            net_dump: self.control_ext.net_dump,
            trace_level: self.control.default_trace_level,
            matched: Vec::new(),
        };
        let relative = iso.trim_start_matches('/');
        let file_name = relative.rsplit('/').next().unwrap_or(relative);
        let mut matching: Vec<&(String, IsoOverride)> = self
            .iso_overrides
            .iter()
            .filter(|(pattern, _)| {
                let subject = if pattern.contains('/') {
                    relative
                } else {
                    file_name
                };
                glob::matches(pattern.trim_start_matches('/'), subject)
            })
            .collect();
        // Stable sort: equal specificity keeps the parsed (key) order.
        matching.sort_by_key(|(pattern, _)| glob::specificity(pattern));
        for (pattern, o) in matching {
            settings.matched.push(pattern.clone());
            if let Some(v) = o.ram {
                settings.ram_mb = v;
            }
            if let Some(v) = o.cpus {
                settings.cpus = v;
            }
            if let Some(v) = o.tpm {
                settings.tpm = v;
            }
            if let Some(v) = &o.cpu_features {
                settings.cpu_features = Some(v.clone());
            }
            if let Some(v) = o.firmware {
                settings.firmware = Some(v);
            }
            if let Some(v) = o.net {
                settings.net = v;
            }
            if let Some(v) = o.net_dump {
                settings.net_dump = v;
            }
            if let Some(v) = o.trace_level {
                settings.trace_level = v;
            }
        }
        // Dumping traffic needs a network.
        if settings.net_dump {
            settings.net = true;
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../overlays/data/hiperiso/hiperiso.json.example");

    #[test]
    fn example_file_loads_cleanly() {
        let loaded = Config::load("hiperiso.json.example", EXAMPLE);
        assert_eq!(loaded.error, None);
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        assert!(!loaded.config.iso_overrides.is_empty());
    }

    #[test]
    fn broken_json_gives_defaults_and_position() {
        let loaded = Config::load(
            "hiperiso.json",
            "{\n  \"control\": {\n    \"default_ram\": ,\n  }\n}",
        );
        assert_eq!(loaded.config, Config::default());
        let err = loaded.error.expect("syntax error recorded");
        assert_eq!((err.line, err.column), (3, 20));
        let text = err.to_string();
        assert!(
            text.starts_with("hiperiso.json: invalid JSON at line 3, column 20"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_warn() {
        let loaded = Config::load(
            "h.json",
            r#"{"control": {"default_ram": 4096, "default_cpus": 0, "colour": 1,
                "default_trace_level": "loud", "after": "reboot"},
               "control_ext": {"net_dump": "yes", "net": true},
               "iso_overrides": {"*.iso": {"ram": 1024, "gpu": 1, "firmware": "coreboot"}},
               "extra": {}}"#,
        );
        let c = &loaded.config;
        assert_eq!(c.control.default_ram, 4096);
        assert_eq!(c.control.default_cpus, 2, "bad value keeps default");
        assert_eq!(c.control.after, AfterAction::Reboot);
        assert!(c.control_ext.net);
        assert!(!c.control_ext.net_dump);
        let w = loaded.warnings.join("\n");
        for needle in [
            "control.default_cpus",
            "control.colour: unknown key",
            "control.default_trace_level",
            "control_ext.net_dump",
            "iso_overrides.\"*.iso\".gpu: unknown key",
            "coreboot",
            "h.json: extra: unknown key",
        ] {
            assert!(w.contains(needle), "missing {needle:?} in:\n{w}");
        }
        assert_eq!(loaded.warnings.len(), 7, "{w}");
    }

    #[test]
    fn overrides_apply_least_to_most_specific() {
        let loaded = Config::load(
            "h.json",
            r#"{"control": {"default_ram": 2048, "default_cpus": 2},
                "iso_overrides": {
                  "win11*.iso": {"ram": 8192, "tpm": true, "firmware": "uefi"},
                  "*.iso": {"ram": 4096, "cpus": 4, "trace_level": "full"},
                  "win*": {"cpu_features": "+vmx", "net_dump": true},
                  "ISOs/old/*.iso": {"firmware": "bios"},
                  "dos*.iso": {"ram": 64}
                }}"#,
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.config.settings_for("/ISOs/Win11_23H2.iso");
        assert_eq!(s.matched, vec!["win*", "*.iso", "win11*.iso"]);
        assert_eq!(s.ram_mb, 8192);
        assert_eq!(s.cpus, 4);
        assert!(s.tpm);
        assert_eq!(s.firmware, Some(Firmware::Uefi));
        assert_eq!(s.cpu_features.as_deref(), Some("+vmx"));
        assert!(s.net_dump && s.net, "net_dump implies net");
        assert_eq!(s.trace_level, TraceLevel::Full);

        let s = loaded.config.settings_for("/ISOs/old/freedos.iso");
        assert_eq!(s.matched, vec!["*.iso", "ISOs/old/*.iso"]);
        assert_eq!(s.firmware, Some(Firmware::Bios));
        assert_eq!(s.ram_mb, 4096);

        let s = loaded.config.settings_for("/ISOs/image.img");
        assert!(s.matched.is_empty());
        assert_eq!((s.ram_mb, s.cpus, s.tpm, s.net), (2048, 2, false, true));
    }

    #[test]
    fn cpu_features_as_an_array_of_names() {
        let loaded = Config::load(
            "h.json",
            r#"{"iso_overrides": {
                  "*windows11*.iso": {"cpu_features": ["vmx", "-svm", "+x2apic"]},
                  "bad*.iso": {"cpu_features": ["vmx", 3, "--svm", "a b"]}
                }}"#,
        );
        let s = loaded.config.settings_for("/ISOs/windows11_24h2.iso");
        assert_eq!(s.cpu_features.as_deref(), Some("+vmx,-svm,+x2apic"));
        let s = loaded.config.settings_for("/ISOs/bad.iso");
        assert_eq!(s.cpu_features.as_deref(), Some("+vmx"));
        assert_eq!(
            loaded.warnings,
            [
                "h.json: iso_overrides.\"bad*.iso\".cpu_features[1]: expected a CPU feature name such as \"vmx\" or \"-svm\", got 3; ignored",
                "h.json: iso_overrides.\"bad*.iso\".cpu_features[2]: expected a CPU feature name such as \"vmx\" or \"-svm\", got \"--svm\"; ignored",
                "h.json: iso_overrides.\"bad*.iso\".cpu_features[3]: expected a CPU feature name such as \"vmx\" or \"-svm\", got \"a b\"; ignored",
            ]
        );
    }

    #[test]
    fn per_iso_override_files() {
        let mut loaded = Config::load("h.json", r#"{"iso_overrides": {"*.iso": {"ram": 512}}}"#);
        let mut warnings = Vec::new();
        let config = &mut loaded.config;
        config.add_override_file(
            "/hiperiso/iso_overrides/windows11.json",
            r#"{"match": "*windows11*.iso", "ram": 4096, "tpm": true, "cpu_features": ["vmx"]}"#,
            &mut warnings,
        );
        config.add_override_file(
            "/hiperiso/iso_overrides/freedos.json",
            r#"{"firmware": "bios", "colour": "red"}"#,
            &mut warnings,
        );
        config.add_override_file("/hiperiso/iso_overrides/broken.json", "{", &mut warnings);
        let s = config.settings_for("/ISOs/sub/en_windows11_x64.iso");
        assert_eq!(s.matched, ["*.iso", "*windows11*.iso"]);
        assert_eq!((s.ram_mb, s.tpm), (4096, true));
        assert_eq!(s.cpu_features.as_deref(), Some("+vmx"));
        let s = config.settings_for("/ISOs/freedos.iso");
        assert_eq!(s.matched, ["*.iso", "freedos.iso"]);
        assert_eq!((s.ram_mb, s.firmware), (512, Some(Firmware::Bios)));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(
            warnings[0],
            "/hiperiso/iso_overrides/freedos.json: colour: unknown key ignored"
        );
        assert!(
            warnings[1].starts_with("/hiperiso/iso_overrides/broken.json: invalid JSON"),
            "{warnings:?}"
        );
    }
}
