//! Verdicts from real screens: fixtures captured from real ISOs booted under
//! plain QEMU (TCG, SeaBIOS) with QMP `screendump` and the VGA text buffer
//! (fixtures/screens/capture.py, assemble.py), and synthetic serial logs.

use hiperiso_runtime::analyze::{self, BootResult};
use hiperiso_runtime::contact;
use hiperiso_runtime::patterns::{Domain, Source, Stage};
use hiperiso_runtime::picture;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/screens")
        .join(name)
}

/// A writable copy of a fixture session (analysis writes its report).
fn session(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn no_ocr() {
    // SAFETY: set before any thread of this test reads the environment;
    // every test sets the same value.
    unsafe { std::env::set_var("HIPERISO_NO_OCR", "1") };
}

#[test]
fn grub_rescue_menu_on_screen_is_booted_at_the_bootloader() {
    no_ocr();
    let dir = session("grub-rescue");
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Booted, "{}", report.summary);
    assert_eq!(report.furthest_stage, Some(Stage::Bootloader));
    let at = report.furthest_stage_at.as_ref().unwrap();
    assert_eq!(at.at.source, Source::Screen);
    assert!(
        at.at.text.contains("GNU GRUB  version 2.06"),
        "{}",
        at.at.text
    );
    assert!(
        at.at
            .screenshot
            .as_deref()
            .unwrap()
            .starts_with("screenshots/")
    );
    assert!(report.summary.contains("GNU GRUB"), "{}", report.summary);
    let last = report.last_screen_text.as_deref().unwrap();
    assert!(
        last.contains("Memtest86+") && last.contains("GNU/Linux"),
        "{last}"
    );
    let text = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(text.contains("Last screen (screenshots/0003.png"), "{text}");
    assert!(
        text.contains("  | ") && text.contains("RESULT: booted"),
        "{text}"
    );
    let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    assert!(json.contains("\"last_screen_text\"") && json.contains("\"source\": \"screen\""));
}

#[test]
fn memtest_screen_is_booted() {
    no_ocr();
    let dir = session("memtest");
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Booted, "{}", report.summary);
    assert_eq!(report.furthest_stage, Some(Stage::Bootloader));
    assert!(report.summary.contains("Memtest86+"), "{}", report.summary);
    assert!(report.serial_bytes == 0);
}

#[test]
fn ipxe_without_network_is_a_failure() {
    no_ocr();
    let dir = session("ipxe");
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed, "{}", report.summary);
    let first = &report.errors.first[0];
    assert_eq!(first.id, "netboot_no_network");
    assert_eq!(first.at.source, Source::Screen);
    assert!(first.at.text.contains("No more network devices"));
    assert!(report.hints[0].contains("network"), "{:?}", report.hints);
    // Each line is counted once, though it stays on later screens.
    assert_eq!(
        report
            .errors
            .first
            .iter()
            .filter(|f| f.id == "netboot_no_network")
            .count(),
        1
    );
}

fn serial_session(log: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("serial.log"), log).unwrap();
    dir
}

#[test]
fn a_serial_login_prompt_is_booted() {
    let dir = serial_session(
        "SeaBIOS (version 1.16.2)\n\
         [    0.000000] Linux version 6.1.0-18-amd64\n\
         [    1.500000] Run /init as init process\n\
         \n\
         Debian GNU/Linux 12 debian ttyS0\n\
         \n\
         debian login: \n",
    );
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Booted, "{}", report.summary);
    assert_eq!(report.furthest_stage, Some(Stage::Login));
    let at = report.furthest_stage_at.unwrap();
    assert_eq!(
        (at.at.source, at.at.file.as_str(), at.at.line),
        (Source::Serial, "serial.log", 7)
    );
    assert!(
        report.summary.contains("login prompt"),
        "{}",
        report.summary
    );
}

#[test]
fn a_panic_is_a_kernel_failure() {
    let dir = serial_session(
        "[    0.000000] Linux version 6.1.0\n\
         [    2.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
    );
    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed, "{}", report.summary);
    assert_eq!(report.errors.first[0].id, "no_root_fs");
}

#[test]
fn an_unchanged_screen_at_the_end_is_stuck() {
    no_ocr();
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("screenshots");
    std::fs::create_dir(&shots).unwrap();
    let png = picture::encode_png(&picture::Picture::filled(8, 8, [0, 0, 0]));
    let mut timeline = String::new();
    for (i, ms) in [1_000u64, 5_000, 40_000, 80_000].iter().enumerate() {
        let name = format!("{:04}.png", i + 1);
        std::fs::write(shots.join(&name), &png).unwrap();
        timeline += &format!(
            "{{\"file\":\"{name}\",\"uptime_ms\":{ms},\"text\":null,\"changed\":{}}}\n",
            i < 2
        );
    }
    std::fs::write(shots.join("timeline.jsonl"), timeline).unwrap();
    std::fs::write(dir.path().join("serial.log"), "").unwrap();
    let report = analyze::build_report(dir.path()).unwrap();
    let screens = report.screens.as_ref().unwrap();
    assert_eq!(screens.unchanged_at_end_ms, Some(75_000));
    assert_eq!(report.result, BootResult::Stuck, "{}", report.summary);
    assert!(report.summary.contains("75 s"), "{}", report.summary);
}

#[test]
fn contact_sheet_and_animation_of_real_screens() {
    let dir = tempfile::tempdir().unwrap();
    let [sheet, anim] = contact::write(&fixture("ipxe"), dir.path()).unwrap();
    let sheet = picture::decode_png(&std::fs::read(sheet).unwrap()).unwrap();
    assert_eq!((sheet.width, sheet.height), contact::sheet_size(3));
    let n = sheet.pixels.len() as f64;
    let mean = sheet.pixels.iter().map(|&p| p as f64).sum::<f64>() / n;
    let variance = sheet
        .pixels
        .iter()
        .map(|&p| (p as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(variance > 100.0, "a blank sheet: variance {variance}");
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(anim).unwrap()));
    let reader = decoder.read_info().unwrap();
    let actl = reader.info().animation_control().unwrap();
    assert_eq!(actl.num_frames, 3);
}

/// Left alone, the rescue CD's menu runs its default entry, which finds no
/// kernel (the VGA text of that screen, as the e2e run of
/// tests/it/verdicts.rs read it): a boot loader failure after the menu.
#[test]
fn grub_rescue_default_entry_without_a_kernel_is_a_bootloader_failure() {
    no_ocr();
    let dir = session("grub-rescue");
    let shots = dir.path().join("screenshots");
    std::fs::copy(shots.join("0003.png"), shots.join("0004.png")).unwrap();
    std::fs::write(
        shots.join("0004.txt"),
        "  Booting `GNU/Linux'\n\nerror: hd0 cannot get C/H/S values.\nerror: you need to \
         load the kernel first.\n\nPress any key to continue...\n\n  Failed to boot both \
         default and fallback entries.\n\nPress any key to continue...\n",
    )
    .unwrap();
    let mut timeline = std::fs::read_to_string(shots.join("timeline.jsonl")).unwrap();
    timeline.push_str(
        "{\"file\": \"0004.png\", \"uptime_ms\": 40000, \"utc\": null, \"width\": 720, \
         \"height\": 400, \"text\": \"0004.txt\", \"changed\": true}\n",
    );
    std::fs::write(shots.join("timeline.jsonl"), timeline).unwrap();

    let report = analyze::analyze(dir.path()).unwrap();
    assert_eq!(report.result, BootResult::Failed, "{}", report.summary);
    assert_eq!(report.failure_domain, Some(Domain::Bootloader));
    assert_eq!(report.furthest_stage, Some(Stage::Bootloader));
    assert_eq!(
        report.summary,
        "bootloader failure after stage bootloader: Failed to boot both default and fallback \
         entries."
    );
    let ids: Vec<&str> = report.errors.first.iter().map(|f| f.id).collect();
    assert_eq!(ids, ["grub_no_kernel", "grub_boot_failed"]);
    assert!(
        report
            .hints
            .iter()
            .any(|h| h.contains("GRUB inside the ISO")),
        "{:?}",
        report.hints
    );
}

#[test]
fn ocr_reads_the_grub_menu_when_tesseract_is_there() {
    if !hiperiso_prereq::tools(&[("tesseract", "tesseract-ocr tesseract-ocr-eng")]) {
        return;
    }
    let dir = session("grub-rescue");
    for n in 1..=3 {
        std::fs::remove_file(dir.path().join(format!("screenshots/{n:04}.txt"))).unwrap();
    }
    let shot = hiperiso_runtime::screens::shots(dir.path()).pop().unwrap();
    let shot = hiperiso_runtime::screens::Shot { text: None, ..shot };
    let text = hiperiso_runtime::screens::text_of(dir.path(), &shot, true).unwrap();
    assert!(text.text.contains("GNU GRUB"), "{}", text.text);
    assert!(dir.path().join("screenshots/0003.ocr.txt").is_file());
}
