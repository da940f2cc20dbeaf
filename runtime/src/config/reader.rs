//! Reading `hiperiso.json`'s values: each key checked, a warning naming
//! the file and the key for anything unusable.

use super::{Config, Control, ControlExt, Firmware, IsoOverride};
use serde_json::{Map, Value};

pub(super) struct Reader<'a> {
    pub(super) file: &'a str,
    pub(super) warnings: &'a mut Vec<String>,
}

impl Reader<'_> {
    pub(super) fn warn(&mut self, path: &str, message: &str) {
        self.warnings
            .push(format!("{}: {path}: {message}", self.file));
    }

    fn object<'v>(&mut self, path: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
        let object = value.as_object();
        if object.is_none() {
            self.warn(path, &format!("expected an object, got {value}; ignored"));
        }
        object
    }

    fn positive(&mut self, path: &str, value: &Value, max: u64) -> Option<u32> {
        match value.as_u64() {
            Some(n) if (1..=max).contains(&n) => Some(n as u32),
            _ => {
                self.warn(
                    path,
                    &format!("expected an integer from 1 to {max}, got {value}; ignored"),
                );
                None
            }
        }
    }

    fn unsigned(&mut self, path: &str, value: &Value) -> Option<u32> {
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.warn(
                    path,
                    &format!("expected a non-negative integer, got {value}; ignored"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        let b = value.as_bool();
        if b.is_none() {
            self.warn(
                path,
                &format!("expected true or false, got {value}; ignored"),
            );
        }
        b
    }

    fn string(&mut self, path: &str, value: &Value) -> Option<String> {
        let s = value.as_str().map(str::to_string);
        if s.is_none() {
            self.warn(path, &format!("expected a string, got {value}; ignored"));
        }
        s
    }

    fn parsed<T: std::str::FromStr<Err = String>>(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Option<T> {
        let text = self.string(path, value)?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.warn(path, &format!("{e}; ignored"));
                None
            }
        }
    }

    fn firmware(&mut self, path: &str, value: &Value) -> Option<Firmware> {
        match self.string(path, value)?.as_str() {
            "uefi" => Some(Firmware::Uefi),
            "bios" => Some(Firmware::Bios),
            other => {
                self.warn(
                    path,
                    &format!("unknown firmware {other:?} (expected uefi or bios); ignored"),
                );
                None
            }
        }
    }

    pub(super) fn control(&mut self, value: &Value, control: &mut Control) {
        let Some(map) = self.object("control", value) else {
            return;
        };
        for (key, v) in map {
            let path = format!("control.{key}");
            match key.as_str() {
                "default_ram" => {
                    if let Some(n) = self.positive(&path, v, 1 << 20) {
                        control.default_ram = n;
                    }
                }
                "default_cpus" => {
                    if let Some(n) = self.positive(&path, v, 1024) {
                        control.default_cpus = n;
                    }
                }
                "default_trace_level" => {
                    if let Some(level) = self.parsed(&path, v) {
                        control.default_trace_level = level;
                    }
                }
                "menu_timeout" => match v.as_i64() {
                    Some(n) if (-1..=86_400).contains(&n) => control.menu_timeout = n as i32,
                    _ => self.warn(
                        &path,
                        &format!("expected seconds from -1 to 86400, got {v}; ignored"),
                    ),
                },
                "default_image" => {
                    if v.is_null() {
                        control.default_image = None;
                    } else if let Some(s) = self.string(&path, v) {
                        control.default_image = Some(s);
                    }
                }
                "after" => {
                    if let Some(action) = self.parsed(&path, v) {
                        control.after = action;
                    }
                }
                "screenshot_interval" => {
                    if let Some(n) = self.unsigned(&path, v) {
                        control.screenshot_interval = n;
                    }
                }
                "session_timeout" => {
                    if let Some(n) = self.unsigned(&path, v) {
                        control.session_timeout = n;
                    }
                }
                _ => self.warn(&path, "unknown key ignored"),
            }
        }
    }

    pub(super) fn control_ext(&mut self, value: &Value, ext: &mut ControlExt) {
        let Some(map) = self.object("control_ext", value) else {
            return;
        };
        for (key, v) in map {
            let path = format!("control_ext.{key}");
            let slot = match key.as_str() {
                "net" => &mut ext.net,
                "net_dump" => &mut ext.net_dump,
                "fallback_tcg" => &mut ext.fallback_tcg,
                "firmware_log" => &mut ext.firmware_log,
                _ => {
                    self.warn(&path, "unknown key ignored");
                    continue;
                }
            };
            if let Some(b) = self.boolean(&path, v) {
                *slot = b;
            }
        }
    }

    pub(super) fn overrides(&mut self, value: &Value) -> Vec<(String, IsoOverride)> {
        let Some(map) = self.object("iso_overrides", value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pattern, entry) in map {
            let base = format!("iso_overrides.{pattern:?}");
            if let Some(fields) = self.object(&base, entry) {
                out.push((pattern.clone(), self.override_fields(&base, fields, &[])));
            }
        }
        out
    }

    /// One override's keys; `skip`: keys the caller reads itself.
    fn override_fields(
        &mut self,
        base: &str,
        fields: &Map<String, Value>,
        skip: &[&str],
    ) -> IsoOverride {
        let mut o = IsoOverride::default();
        for (key, v) in fields {
            let path = if base.is_empty() {
                key.clone()
            } else {
                format!("{base}.{key}")
            };
            match key.as_str() {
                "ram" => o.ram = self.positive(&path, v, 1 << 20),
                "cpus" => o.cpus = self.positive(&path, v, 1024),
                "tpm" => o.tpm = self.boolean(&path, v),
                "cpu_features" => o.cpu_features = self.cpu_features(&path, v),
                "firmware" => o.firmware = self.firmware(&path, v),
                "net" => o.net = self.boolean(&path, v),
                "net_dump" => o.net_dump = self.boolean(&path, v),
                "trace_level" => o.trace_level = self.parsed(&path, v),
                k if skip.contains(&k) || k.starts_with('_') || k == "comment" => {}
                _ => self.warn(&path, "unknown key ignored"),
            }
        }
        o
    }

    /// QEMU's `-cpu` feature list: a string (`"+vmx,-svm"`) as it is, or an
    /// array of names (`["vmx", "-svm"]`), a name without a sign meaning `+`.
    fn cpu_features(&mut self, path: &str, value: &Value) -> Option<String> {
        let Some(items) = value.as_array() else {
            return self.string(path, value);
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let name = item.as_str().unwrap_or("");
            let bare = name.trim_start_matches(['+', '-']);
            let valid = !bare.is_empty()
                && name.len() - bare.len() <= 1
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                self.warn(
                    &format!("{path}[{i}]"),
                    &format!("expected a CPU feature name such as \"vmx\" or \"-svm\", got {item}; ignored"),
                );
                continue;
            }
            out.push(if bare.len() == name.len() {
                format!("+{name}")
            } else {
                name.to_string()
            });
        }
        Some(out.join(","))
    }
}

impl Config {
    /// Add the per-ISO override file `file` (shown in warnings), named
    /// `NAME.json`: its keys are an `iso_overrides` entry's; it applies to
    /// the glob in its `match` key, else to the image file `NAME.iso`.
    pub fn add_override_file(&mut self, file: &str, text: &str, warnings: &mut Vec<String>) {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!("{file}: invalid JSON ({e}); ignored"));
                return;
            }
        };
        let mut reader = Reader { file, warnings };
        let Some(fields) = reader.object("the top level", &value) else {
            return;
        };
        let name = file.rsplit('/').next().unwrap_or(file);
        let stem = name.strip_suffix(".json").unwrap_or(name);
        let pattern = match fields.get("match") {
            None => format!("{stem}.iso"),
            Some(v) => match reader.string("match", v) {
                Some(glob) => glob,
                None => return,
            },
        };
        let o = reader.override_fields("", fields, &["match"]);
        self.iso_overrides.push((pattern, o));
    }
}
