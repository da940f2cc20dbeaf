//! One session, step by step: create the [`Recording`], load the config,
//! take the host inventory, check KVM and the ISO, run the guest, finish.
//! A fatal failure at any step is recorded and ends the session there.

use super::boot::{Boot, DATA_MOUNT, DEFAULT_DATA_WAIT, TMPFS_LOGS};
use super::console::say;
use super::firmware;
use super::partitions::ProbedPartition;
use super::recording::Recording;
use super::vm::power::PowerButtons;
use super::vm::{self, Guest};
use crate::cmdline::AfterAction;
use crate::config::{Config, EffectiveSettings, Firmware, LoadedConfig};
use crate::grubenv;
use crate::hw;
use crate::kvm;
use crate::qemu::Accel;
use crate::sys;
use hiperiso_stick::boot::grubenv as grubenv_keys;
use hiperiso_stick::error_chain;
use hiperiso_stick::io::write_atomic;
use hiperiso_stick::paths::data;
use hiperiso_stick::session::{self, FailureKind, Stage, files};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the host's input devices are (the ACPI power button among them).
const INPUT_DIR: &str = "/dev/input";

/// Record a whole session; returns what to do afterwards and whether it failed.
pub fn run(boot: &Boot) -> (AfterAction, bool) {
    let default_after = boot.cmdline.after.unwrap_or(AfterAction::Poweroff);
    let Some(mut rec) = start_recording(boot) else {
        return (default_after, true);
    };
    // Opened early, so a press before QEMU runs is not lost.
    let power_buttons = PowerButtons::open(Path::new(INPUT_DIR));
    let buttons = power_buttons.names();
    rec.say(&if buttons.is_empty() {
        "no power button input device; only the guest, session_timeout or a hotkey end the session"
            .into()
    } else {
        format!("power button: {}", buttons.join(", "))
    });
    // Config (never fatal).
    let t = sys::uptime_ms();
    let (loaded, config_state) = load_config(boot.data.is_some());
    rec.info.config_warnings = loaded.warnings.clone();
    rec.info.secure_boot = Some(boot.secure_boot.to_string());
    rec.info.lockdown = Some(boot.lockdown.clone());
    write_env_txt(&mut rec, boot, &config_state);
    rec.mark("env_written");
    let message = format!(
        "session {} created in {}",
        rec.info.id,
        rec.logs_dir.display()
    );
    rec.stage(Stage::SessionCreated, &message);
    if boot.data.is_none() {
        rec.fail(
            FailureKind::NoDataPartition,
            true,
            format!(
                "no data partition matching {} appeared within {} s; this session is only on tmpfs ({}) and is lost at power-off",
                boot.cmdline.data,
                boot.cmdline.wait_seconds.unwrap_or(DEFAULT_DATA_WAIT),
                rec.dir.display()
            ),
        );
        rec.finish();
        return (default_after, true);
    }
    let (config, settings) = apply_config(&mut rec, boot, loaded, &config_state, t);
    let after = boot.cmdline.after.unwrap_or(config.control.after);
    let failed = run_guest(
        &mut rec,
        boot,
        &config,
        &settings,
        &config_state,
        power_buttons,
    );
    // The host's power button means "turn the stick's machine off", whatever
    // hiperiso.after says.
    let after = if rec.info.outcome == session::Outcome::Stopped {
        AfterAction::Poweroff
    } else {
        after
    };
    // GRUB holds its menu on the next boot, after a failure too.
    if after == AfterAction::Menu {
        write_grubenv(&config, true);
    }
    (after, failed)
}

/// Check the host and the ISO, run the guest, finish the session; returns
/// whether it failed.
fn run_guest(
    rec: &mut Recording,
    boot: &Boot,
    config: &Config,
    settings: &EffectiveSettings,
    config_state: &str,
    mut power_buttons: PowerButtons,
) -> bool {
    let checked = check_host_and_iso(rec, boot, config, settings);
    // Again, now with the KVM state.
    write_env_txt(rec, boot, config_state);
    let Some((iso_path, accel, firmware)) = checked else {
        rec.finish();
        return true;
    };
    let guest = Guest {
        iso_path: &iso_path,
        accel,
        firmware,
        settings,
        config,
    };
    let failed = if power_buttons.pressed() {
        rec.warn(
            "the host's power button was pressed before the guest started; not starting it".into(),
        );
        rec.info.outcome = session::Outcome::Stopped;
        false
    } else {
        vm::run_qemu(rec, boot, &guest, power_buttons)
    };
    rec.mark("qemu_returned");
    rec.finish();
    failed
}

/// The session directory (on the data partition, else on tmpfs) and the
/// phases before it.
fn start_recording(boot: &Boot) -> Option<Recording> {
    let logs_dir = match &boot.data {
        Some(_) => Path::new(DATA_MOUNT).join(data::LOGS_DIR),
        None => PathBuf::from(TMPFS_LOGS),
    };
    let iso = boot.cmdline.iso.as_deref().unwrap_or_default();
    let mut rec = match Recording::create(
        &logs_dir,
        if iso.is_empty() { "no-iso" } else { iso },
        &boot.cmdline_text,
    ) {
        Ok(rec) => rec,
        Err(e) => {
            say(&format!("cannot create a session: {}", error_chain(&e)));
            return None;
        }
    };
    if boot.data.is_some() {
        rec.log_dir = format!("/{}/{}", data::LOGS_DIR, rec.info.id);
    }
    rec.mark_at("kernel_start", boot.t_start);
    rec.mark("session_created");
    rec.phase_between("kernel", 0, boot.t_start);
    rec.phase_between("modules", boot.t_start, boot.t_modules);
    rec.phase_between("wait_data", boot.t_modules, boot.t_data);
    rec.info
        .warnings
        .extend(boot.cmdline.warnings.iter().cloned());
    Some(rec)
}

/// The config's error and warnings into the session, GRUB's environment,
/// and the settings for this ISO.
fn apply_config(
    rec: &mut Recording,
    boot: &Boot,
    loaded: LoadedConfig,
    config_state: &str,
    t: u64,
) -> (Config, EffectiveSettings) {
    if let Some(error) = &loaded.error {
        rec.fail(
            FailureKind::ConfigBroken,
            false,
            format!("{error}; continuing with the default settings"),
        );
    }
    for warning in &loaded.warnings {
        rec.say(&format!("warning: {warning}"));
    }
    let config = loaded.config;
    write_grubenv(&config, false);
    let iso = boot.cmdline.iso.as_deref().unwrap_or_default();
    let mut settings = config.settings_for(iso);
    if let Some(level) = boot.cmdline.trace {
        settings.trace_level = level;
    }
    rec.info.trace_level = settings.trace_level.to_string();
    rec.info.ram_mb = settings.ram_mb;
    rec.info.cpus = settings.cpus;
    rec.info.net = settings.net;
    rec.info.net_dump = settings.net_dump;
    rec.info.tpm = settings.tpm;
    rec.info.matched_overrides = settings.matched.clone();
    rec.phase("config", t);
    rec.stage(
        Stage::ConfigLoaded,
        &format!("configuration: {config_state}"),
    );
    (config, settings)
}

/// Host inventory, the accelerator and the ISO's firmware; `None` after a
/// fatal failure (recorded).
fn check_host_and_iso(
    rec: &mut Recording,
    boot: &Boot,
    config: &Config,
    settings: &EffectiveSettings,
) -> Option<(PathBuf, Accel, Firmware)> {
    host_inventory(rec);
    let accel = choose_accel(rec, boot, config)?;
    rec.info.accel = Some(accel.as_str().into());
    rec.stage(Stage::KvmCheck, &format!("accelerator: {}", accel.as_str()));

    // The ISO and its firmware.
    let t = sys::uptime_ms();
    let iso = boot.cmdline.iso.as_deref().unwrap_or_default();
    if iso.is_empty() {
        rec.fail(
            FailureKind::Internal,
            true,
            "no hiperiso.iso= on the kernel command line; pick an image in the boot menu".into(),
        );
        return None;
    }
    let iso_path = Path::new(DATA_MOUNT).join(iso.trim_start_matches('/'));
    let firmware = match firmware::check_iso(&iso_path, settings) {
        Ok((firmware, reason, size)) => {
            rec.info.iso_size = Some(size);
            rec.info.firmware = Some(firmware.as_str().into());
            rec.info.firmware_reason = Some(reason.into());
            firmware
        }
        Err((kind, message)) => {
            rec.phase("iso_check", t);
            rec.fail(kind, true, message);
            return None;
        }
    };
    rec.phase("iso_check", t);
    rec.mark("iso_verified");
    rec.stage(
        Stage::IsoCheck,
        &format!(
            "{iso}: booting with {} ({})",
            firmware.as_str(),
            rec.info.firmware_reason.clone().unwrap_or_default()
        ),
    );
    Some((iso_path, accel, firmware))
}

/// `hw/` for the host.
fn host_inventory(rec: &mut Recording) {
    let t = sys::uptime_ms();
    let hw_dir = rec.dir.join(files::HW_DIR);
    if let Err(e) = hw::collect_host(
        &hw_dir,
        Path::new("/proc"),
        Path::new("/sys"),
        &Path::new("/").join(hiperiso_stick::paths::initramfs::KERNEL_CONFIG),
        &hw::read_dmesg(),
    ) {
        rec.warn(error_chain(&e));
    }
    rec.phase("host_inventory", t);
    rec.stage(Stage::HostInventory, "host inventory written to hw/");
}

/// KVM, for real; TCG when KVM is unusable and fallback is enabled.
fn choose_accel(rec: &mut Recording, boot: &Boot, config: &Config) -> Option<Accel> {
    let t = sys::uptime_ms();
    let fallback = boot.cmdline.fallback || config.control_ext.fallback_tcg;
    let accel = match kvm::check_kvm(Path::new("/dev/kvm")) {
        Ok(info) => {
            if let Ok(text) = session::to_json("kvm_caps.json", &info) {
                let _ = fs::write(rec.dir.join(files::HW_DIR).join("kvm_caps.json"), text);
            }
            rec.kvm = "available";
            Accel::Kvm
        }
        Err(e) if fallback => {
            rec.kvm = "unavailable";
            rec.warn(format!(
                "KVM unusable ({}); using TCG because fallback is enabled",
                error_chain(&e)
            ));
            Accel::Tcg
        }
        Err(e) => {
            rec.kvm = "unavailable";
            rec.phase("kvm_check", t);
            rec.mark("kvm_checked");
            rec.fail(
                FailureKind::NoKvm,
                true,
                format!(
                    "KVM cannot run a VM here: {}. Enable virtualization (VT-x/AMD-V) in the firmware setup, or boot with hiperiso_fallback=1 to use the slow TCG emulator.",
                    error_chain(&e)
                ),
            );
            return None;
        }
    };
    rec.phase("kvm_check", t);
    rec.mark("kvm_checked");
    Some(accel)
}

fn load_config(have_data: bool) -> (LoadedConfig, String) {
    let path = Path::new(DATA_MOUNT).join(data::CONFIG);
    if !have_data {
        return (
            Config::load("hiperiso.json", "{}"),
            "defaults (no data partition)".into(),
        );
    }
    let (mut loaded, state) = match fs::read_to_string(&path) {
        Ok(text) => {
            let loaded = Config::load(&format!("/{}", data::CONFIG), &text);
            let state = if loaded.error.is_some() {
                "broken, defaults used"
            } else {
                "loaded"
            };
            (loaded, format!("/{} ({state})", data::CONFIG))
        }
        Err(_) => (
            Config::load("hiperiso.json", "{}"),
            format!("defaults (/{} absent)", data::CONFIG),
        ),
    };
    let dir = Path::new(DATA_MOUNT).join(data::ISO_OVERRIDES_DIR);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| {
        f.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    });
    files.sort();
    for file in &files {
        let name = format!(
            "/{}/{}",
            data::ISO_OVERRIDES_DIR,
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        match fs::read_to_string(file) {
            Ok(text) => loaded
                .config
                .add_override_file(&name, &text, &mut loaded.warnings),
            Err(e) => loaded.warnings.push(format!("{name}: {e}; ignored")),
        }
    }
    let state = match files.len() {
        0 => state,
        n => format!("{state}, {n} file(s) in /{}", data::ISO_OVERRIDES_DIR),
    };
    (loaded, state)
}

/// Keep GRUB's timeout and default image in sync with hiperiso.json.
fn write_grubenv(config: &Config, hold_menu: bool) {
    let vars = [
        (
            grubenv_keys::TIMEOUT,
            config.control.menu_timeout.to_string(),
        ),
        (
            grubenv_keys::DEFAULT,
            config.control.default_image.clone().unwrap_or_default(),
        ),
        (
            grubenv_keys::HOLD,
            if hold_menu { "1" } else { "0" }.to_string(),
        ),
    ];
    let path = Path::new(DATA_MOUNT).join(data::GRUBENV);
    match grubenv::render(&vars) {
        Ok(block) => {
            if fs::read(&path).ok().as_deref() != Some(&block[..])
                && let Err(e) = write_atomic(&path, &block)
            {
                say(&error_chain(&e));
            }
        }
        Err(e) => say(&format!("{}: {e}", path.display())),
    }
}

fn write_env_txt(rec: &mut Recording, boot: &Boot, config_state: &str) {
    let env = env_txt(boot, config_state, rec);
    rec.write_file(files::ENV_TXT, env.as_bytes());
}

fn env_txt(boot: &Boot, config_state: &str, rec: &Recording) -> String {
    let (cmdline, modules) = (&boot.cmdline, &boot.modules);
    let (data, esp) = (boot.data.as_ref(), boot.esp.as_ref());
    let part = |p: Option<&ProbedPartition>| p.map_or("none".to_string(), |p| p.describe());
    let host = rec.info.host.clone().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!("hiperiso_version={}\n", env!("CARGO_PKG_VERSION")));
    out.push_str(&format!("kernel_release={}\n", sys::kernel_release()));
    out.push_str(&format!(
        "kernel_cmdline={}\n",
        fs::read_to_string("/proc/cmdline")
            .unwrap_or_default()
            .trim()
    ));
    out.push_str(&format!("cpu_model={}\n", host.cpu_model));
    out.push_str(&format!("cpu_cores={}\n", host.cpu_cores));
    out.push_str(&format!("ram_mb={}\n", host.ram_mb));
    out.push_str(&format!("virtualization={}\n", host.virtualization));
    out.push_str(&format!("kvm={}\n", rec.kvm));
    out.push_str(&format!("data_spec={}\n", cmdline.data));
    out.push_str(&format!("data_partition={}\n", part(data)));
    out.push_str(&format!("esp_partition={}\n", part(esp)));
    out.push_str(&format!("secure_boot={}\n", boot.secure_boot));
    out.push_str(&format!("lockdown={}\n", boot.lockdown));
    out.push_str(&format!("config={config_state}\n"));
    out.push_str(&format!("modules_loaded={}\n", modules.loaded.join(",")));
    let failed: Vec<&str> = modules.failed.iter().map(|(m, _)| m.as_str()).collect();
    out.push_str(&format!("modules_failed={}\n", failed.join(",")));
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (k, v) in vars {
        out.push_str(&format!("env.{k}={v}\n"));
    }
    out
}
