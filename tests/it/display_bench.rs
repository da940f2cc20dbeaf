//! The display benchmark (`tests/bench/display.sh`), on the stick test of
//! display.rs.

use hiperiso_build::vm as stick_run;
use hiperiso_tests::isos;

use crate::display::{BOOT_TIMEOUT, lossy, start_outer, stick_booting, tail, text};

/// The benchmark behind `tests/bench/display.sh` (not a timed test: it
/// prints what it measured): the guest redraws its whole screen without
/// pause for `session_timeout` seconds; the viewer's `display.json` gives
/// its update rate, latency and CPU use, beside QEMU's CPU use in the
/// same run.
#[test]
#[ignore = "benchmark; run by tests/bench/display.sh"]
fn bench_viewer_while_the_guest_redraws() {
    let seconds = std::env::var("HIPERISO_BENCH_SECONDS").unwrap_or_else(|_| "60".into());
    let dir = tempfile::tempdir().unwrap();
    let iso = isos::busy_display_iso(dir.path(), "busy", "BUSY-DISPLAY").unwrap();
    let config = format!(
        r#"{{"control": {{"default_ram": 256, "screenshot_interval": 0, "session_timeout": {seconds}}}}}"#
    );
    let image = stick_booting(dir.path(), &iso, &config);
    let (mut outer, console) = start_outer(dir.path(), &image);
    let status = stick_run::wait_with_timeout(&mut outer.0, BOOT_TIMEOUT)
        .unwrap()
        .expect("the VM powers off after the session timeout");
    let console_text = lossy(&console);
    assert!(status.success(), "{}", tail(&console_text, 40));
    let ids = stick_run::session_ids(&image).unwrap();
    let display: serde_json::Value =
        serde_json::from_str(&text(&image, &ids[0], "display.json")).expect("display.json");
    let number = |key: &str| display[key].as_f64().unwrap_or(f64::NAN);
    let guest_s = number("guest_seconds");
    let viewer_cpu = number("display_cpu_ms") + number("input_cpu_ms");
    let qemu_cpu = number("qemu_cpu_ms");
    println!("display.json: {display}");
    println!(
        "viewer in the test VM (TCG outer, nested KVM guest), guest {}x{} -> host {}x{}, {guest_s:.0} s:",
        display["guest_width"],
        display["guest_height"],
        display["host_width"],
        display["host_height"]
    );
    println!(
        "  updates {:.0} ({:.1}/s), latency first byte -> on screen: mean {:.1} ms, p95 {:.1} ms, max {:.1} ms; drawing {:.1} ms",
        number("updates"),
        number("updates_per_second"),
        number("latency_ms_mean"),
        number("latency_ms_p95"),
        number("latency_ms_max"),
        number("draw_ms_mean")
    );
    println!(
        "  CPU: viewer {:.1}% of one vCPU, QEMU (guest + VNC server) {:.1}%; viewer/QEMU = {:.2}",
        viewer_cpu / guest_s / 10.0,
        qemu_cpu / guest_s / 10.0,
        viewer_cpu / qemu_cpu
    );
    assert!(number("updates") > 0.0, "{display}");
}
