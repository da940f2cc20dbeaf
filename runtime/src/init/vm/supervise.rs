//! Watching the running guest until QEMU exits: QMP events (shutdown,
//! crashes), the guest inventory, the screen timeline, the hotkeys'
//! requests, the heartbeat, and the ends that init decides: the host's power
//! button and `session_timeout` (the guest is asked to power down, then
//! QEMU quits after [`STOP_GRACE`]).

use super::power::PowerButtons;
use super::timeline::{Timeline, Trigger};
use crate::config::Config;
use crate::display::viewer::Request;
use crate::hw;
use crate::init::boot::RUN_DIR;
use crate::init::guest_display::GuestDisplay;
use crate::init::recording::Recording;
use crate::qmp::Qmp;
use crate::sys;
use hiperiso_stick::error_chain;
use hiperiso_stick::session::{Outcome, Stage, files};
use hiperiso_stick::time::utc_rfc3339;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// QMP must answer within this time after QEMU starts.
pub const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Seconds after QEMU starts before the guest inventory is taken.
const GUEST_INVENTORY_DELAY: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Looks for the guest's SMBIOS tables: the first with the inventory, the
/// next ones 2, 4, 8, 16, 16… s apart until found, and a last one when the
/// guest shuts down. OVMF under nested, traced KVM takes a while to copy them.
const SMBIOS_LOOKS: u32 = 12;
const SMBIOS_WAIT_MAX: Duration = Duration::from_secs(16);
/// How long a guest asked to power down (ACPI) gets before QEMU quits.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The running VM and what has been seen of it.
pub struct Supervisor {
    child: Child,
    pub qmp: Option<Qmp>,
    /// QMP answered when QEMU started.
    qmp_connected: bool,
    pub started: Instant,
    /// `GUEST_PANICKED`, or an unexpected `STOP` with its run state.
    pub crash_event: Option<String>,
    pub guest_inventory_done: bool,
    /// When to look for the guest's SMBIOS tables again (`None`: found, or
    /// given up), and how many looks so far.
    smbios_next: Option<Instant>,
    smbios_looks: u32,
    /// QEMU pauses when the guest shuts down (`-action shutdown=pause`), so
    /// the guest inventory and a last screenshot can still be taken; then
    /// init quits it.
    guest_shut_down: bool,
    quit_sent: bool,
    /// Init is stopping the guest (power button, timeout): QEMU quits at
    /// this instant unless the guest powered off before.
    stop_deadline: Option<Instant>,
    power_buttons: PowerButtons,
    timeline: Timeline,
    shot_every: Duration,
    next_shot: Instant,
    next_heartbeat: Instant,
    /// `session_timeout` in seconds; 0: none.
    timeout: u32,
    /// The session directory, for syncfs after each heartbeat.
    data_fd: Option<File>,
}

impl Supervisor {
    pub fn new(
        rec: &Recording,
        child: Child,
        qmp: Option<Qmp>,
        started: Instant,
        config: &Config,
        power_buttons: PowerButtons,
    ) -> Supervisor {
        Supervisor {
            child,
            qmp_connected: qmp.is_some(),
            qmp,
            started,
            crash_event: None,
            guest_inventory_done: false,
            smbios_next: None,
            smbios_looks: 0,
            guest_shut_down: false,
            quit_sent: false,
            stop_deadline: None,
            power_buttons,
            timeline: Timeline::new(&rec.dir, Path::new(RUN_DIR)),
            shot_every: Duration::from_secs(u64::from(config.control.screenshot_interval)),
            next_shot: Instant::now() + Duration::from_secs(1),
            next_heartbeat: Instant::now(),
            timeout: config.control.session_timeout,
            data_fd: File::open(&rec.dir).ok(),
        }
    }

    /// Until QEMU exits (`exit`: it already did while QMP connected).
    pub fn run(
        &mut self,
        rec: &mut Recording,
        display: &mut GuestDisplay,
        mut exit: Option<ExitStatus>,
    ) -> ExitStatus {
        loop {
            if let Some(status) = exit.take() {
                return status;
            }
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => {}
                Err(e) => {
                    rec.warn(format!("waiting for QEMU failed: {e}"));
                    return self.child.wait().unwrap_or_else(|_| ExitStatus::default());
                }
            }
            self.poll_events(rec);
            self.check_unexpected_stop();
            self.guest_inventory(rec);
            self.guest_smbios(rec);
            self.periodic_screenshot(rec);
            display.sample_qemu_cpu(self.child.id());
            for request in display.requests() {
                if self.qmp.is_none() {
                    break;
                }
                self.serve(rec, request);
            }
            self.heartbeat(rec);
            self.check_stop_conditions(rec);
        }
    }

    /// QMP events for up to 200 ms, into `guest_events`.
    fn poll_events(&mut self, rec: &mut Recording) {
        let Some(q) = self.qmp.as_mut() else {
            sleep(Duration::from_millis(200));
            return;
        };
        if q.poll_events(Duration::from_millis(200)).is_err() {
            // QEMU is going away; keep waiting for its exit status.
            self.qmp = None;
            return;
        }
        for event in q.events.drain(..) {
            let name = event["event"].as_str().unwrap_or("?").to_string();
            if name == "SHUTDOWN" {
                self.guest_shut_down = true;
            } else if name == "GUEST_PANICKED"
                || (name == "STOP" && self.crash_event.is_none() && !self.guest_shut_down)
            {
                self.crash_event = Some(name.clone());
            }
            rec.info.guest_events.push(format!(
                "{} {name} {}",
                self.started.elapsed().as_millis(),
                event.get("data").map(|d| d.to_string()).unwrap_or_default()
            ));
        }
    }

    /// A stop we did not ask for: KVM internal error or similar.
    fn check_unexpected_stop(&mut self) {
        if self.crash_event.as_deref() != Some("STOP") {
            return;
        }
        let Some(q) = self.qmp.as_mut() else {
            return;
        };
        let status = q.execute("query-status", None).ok();
        let state = status
            .as_ref()
            .and_then(|v| v["status"].as_str())
            .unwrap_or("");
        if matches!(state, "internal-error" | "guest-panicked" | "shutdown") {
            self.crash_event = Some(format!("STOP ({state})"));
            if state != "shutdown" {
                let _ = q.execute("quit", None);
            }
        } else {
            self.crash_event = None;
        }
    }

    /// The guest inventory, once, a few seconds in (or at shutdown).
    fn guest_inventory(&mut self, rec: &mut Recording) {
        if self.guest_inventory_done
            || !(self.started.elapsed() >= GUEST_INVENTORY_DELAY || self.guest_shut_down)
        {
            return;
        }
        let Some(q) = self.qmp.as_mut() else {
            return;
        };
        self.guest_inventory_done = true;
        let t_inv = sys::uptime_ms();
        match hw::collect_guest(&rec.dir.join(files::HW_DIR), q) {
            Ok((_, failed)) => {
                for f in failed {
                    rec.warn(format!("guest inventory: {f}"));
                }
            }
            Err(e) => rec.warn(error_chain(&e)),
        }
        rec.phase("guest_inventory", t_inv);
        self.smbios_next = Some(Instant::now());
        rec.stage(Stage::GuestInventory, "guest inventory written to hw/");
    }

    /// `hw/qemu_smbios.txt`, looked for until found ([`SMBIOS_LOOKS`]).
    fn guest_smbios(&mut self, rec: &mut Recording) {
        let due = self
            .smbios_next
            .is_some_and(|next| Instant::now() >= next || self.guest_shut_down);
        let Some(q) = self.qmp.as_mut().filter(|_| due) else {
            return;
        };
        self.smbios_looks += 1;
        let last = self.guest_shut_down || self.smbios_looks >= SMBIOS_LOOKS;
        self.smbios_next =
            match hw::guest_smbios(&rec.dir.join(files::HW_DIR), q, self.smbios_looks) {
                Ok(false) if !last => {
                    let wait = Duration::from_secs(1 << self.smbios_looks.min(4));
                    Some(Instant::now() + wait.min(SMBIOS_WAIT_MAX))
                }
                Ok(_) => None,
                Err(e) => {
                    rec.warn(error_chain(&e));
                    None
                }
            };
    }

    /// A look at the screen for the timeline (QMP connected).
    fn screenshot(&mut self, rec: &mut Recording, trigger: Trigger) -> Option<String> {
        let q = self.qmp.as_mut()?;
        self.timeline.capture(rec, q, trigger)
    }

    /// Every `screenshot_interval` seconds, and a last look at shutdown.
    fn periodic_screenshot(&mut self, rec: &mut Recording) {
        if self.shot_every.is_zero() || self.qmp.is_none() {
            return;
        }
        if self.guest_shut_down && !self.quit_sent {
            self.screenshot(rec, Trigger::Final);
        } else if Instant::now() >= self.next_shot {
            self.next_shot = Instant::now() + self.shot_every;
            self.screenshot(rec, Trigger::Interval);
        }
    }

    /// A hotkey's request (QMP is connected).
    fn serve(&mut self, rec: &mut Recording, request: Request) {
        match request {
            Request::Screenshot => {
                if let Some(name) = self.screenshot(rec, Trigger::Hotkey) {
                    rec.say(&format!("screenshot {name} taken (hotkey)"));
                }
            }
            Request::PowerOff { force: false } => {
                rec.say("power-off requested (hotkey): pressing the guest's ACPI power button");
                if let Some(q) = self.qmp.as_mut() {
                    let _ = q.execute("system_powerdown", None);
                }
            }
            Request::PowerOff { force: true } => {
                rec.warn("power-off requested twice (hotkey): stopping the guest".into());
                self.quit_sent = true;
                if let Some(q) = self.qmp.as_mut() {
                    let _ = q.execute("quit", None);
                }
            }
        }
    }

    /// `HEARTBEAT` every few seconds, and the data partition synced.
    fn heartbeat(&mut self, rec: &Recording) {
        if Instant::now() < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
        let beat = format!(
            "{} uptime_ms={} guest_s={}\n",
            utc_rfc3339(sys::unix_seconds()),
            sys::uptime_ms(),
            self.started.elapsed().as_secs()
        );
        let _ = fs::write(rec.dir.join(files::HEARTBEAT), beat);
        if let Some(fd) = &self.data_fd {
            // SAFETY: a valid fd; syncfs flushes the data partition.
            unsafe { libc::syncfs(fd.as_raw_fd()) };
        }
    }

    /// Quit QEMU through QMP, or kill it without.
    fn stop_guest(&mut self) {
        self.quit_sent = true;
        match self.qmp.as_mut() {
            Some(q) => {
                let _ = q.execute("quit", None);
            }
            None => {
                let _ = self.child.kill();
            }
        }
    }

    /// Init ends the session: a last screenshot, the guest's ACPI power
    /// button, and QEMU quits after [`STOP_GRACE`] (or when the guest is
    /// off, whichever is first).
    fn begin_stop(&mut self, rec: &mut Recording, outcome: Outcome, why: &str) {
        if self.stop_deadline.is_some() || self.quit_sent {
            return;
        }
        rec.warn(format!(
            "{why}; asking the guest to power down, QEMU quits in {} s at the latest",
            STOP_GRACE.as_secs()
        ));
        rec.info.outcome = outcome;
        rec.stage(Stage::Stopping, why);
        self.screenshot(rec, Trigger::Final);
        self.stop_deadline = Some(Instant::now() + STOP_GRACE);
        let asked = self
            .qmp
            .as_mut()
            .is_some_and(|q| q.execute("system_powerdown", None).is_ok());
        if !asked {
            self.stop_guest();
        }
    }

    /// The guest shut down, QMP never answered, the host's power button,
    /// or the session timed out.
    fn check_stop_conditions(&mut self, rec: &mut Recording) {
        if self.power_buttons.pressed() {
            self.begin_stop(rec, Outcome::Stopped, "the host's power button was pressed");
        }
        if self.guest_shut_down && !self.quit_sent {
            self.stop_guest();
        }
        if self
            .stop_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
            && !self.quit_sent
        {
            self.stop_guest();
        }
        if !self.qmp_connected && !self.quit_sent && self.started.elapsed() > QMP_CONNECT_TIMEOUT {
            // Without the monitor nothing can be recorded, and a guest
            // shutdown would leave QEMU paused forever.
            self.quit_sent = true;
            rec.fail(
                hiperiso_stick::session::FailureKind::QemuStartFailed,
                true,
                format!(
                    "QEMU's QMP monitor did not answer within {} s; QEMU stopped",
                    QMP_CONNECT_TIMEOUT.as_secs()
                ),
            );
            let _ = self.child.kill();
        }
        let timeout = self.timeout;
        if timeout > 0
            && !self.quit_sent
            && self.started.elapsed() >= Duration::from_secs(u64::from(timeout))
        {
            self.begin_stop(
                rec,
                Outcome::Timeout,
                &format!("session_timeout of {timeout} s reached"),
            );
        }
    }
}
