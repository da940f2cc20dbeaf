//! The guest's screen over time: `screenshots/NNNN.png` (and `NNNN.txt` in
//! VGA text mode) with one [`TimelineEntry`] line each in
//! `screenshots/timeline.jsonl`; `session.json`'s `screenshots` follows
//! every saved picture, so an interrupted session counts right too.
//!
//! Policy: the screen is looked at every `screenshot_interval` seconds; a
//! picture is saved when it changed (in text mode: the text buffer, so a
//! blinking cursor is no change), or when it has not for
//! [`TIMELINE_UNCHANGED_EVERY_S`] seconds (`changed: false`), at most
//! [`MAX_SCREENSHOTS`] pictures.

use super::screen::{self, BDA_LEN, BDA_START};
use crate::init::recording::Recording;
use crate::picture::Picture;
use crate::qmp::{Qmp, QmpError};
use crate::sys;
use hiperiso_stick::error_chain;
use hiperiso_stick::session::{MAX_SCREENSHOTS, TIMELINE_UNCHANGED_EVERY_S, TimelineEntry, files};
use hiperiso_stick::time::utc_rfc3339;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a picture is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The interval: saved when changed, or unchanged for a while.
    Interval,
    /// The last look before the guest stops: saved when changed.
    Final,
    /// The user asked (hotkey): always saved.
    Hotkey,
}

/// Whether to save a picture of the screen.
pub fn should_save(trigger: Trigger, changed: bool, since_last_save: Option<Duration>) -> bool {
    match trigger {
        Trigger::Hotkey => true,
        Trigger::Final => changed,
        Trigger::Interval => {
            changed
                || since_last_save
                    .is_none_or(|d| d >= Duration::from_secs(TIMELINE_UNCHANGED_EVERY_S))
        }
    }
}

/// One screen as read from the guest.
struct Look {
    rgb: Picture,
    /// The raw text buffer and its decoded text, in text mode.
    text: Option<(Vec<u8>, String)>,
}

impl Look {
    /// What "changed" compares: the text buffer in text mode, else pixels.
    fn key(&self) -> &[u8] {
        match &self.text {
            Some((raw, _)) => raw,
            None => &self.rgb.pixels,
        }
    }
}

/// The pictures saved so far.
pub struct Timeline {
    dir: PathBuf,
    /// Where QEMU writes the screendump and memory reads (tmpfs).
    scratch: PathBuf,
    last_key: Vec<u8>,
    last_saved: Option<Instant>,
    warned_full: bool,
    warned_failure: bool,
}

impl Timeline {
    pub fn new(session_dir: &Path, scratch: &Path) -> Timeline {
        let dir = session_dir.join(files::SCREENSHOTS_DIR);
        let _ = fs::create_dir_all(&dir);
        Timeline {
            dir,
            scratch: scratch.to_path_buf(),
            last_key: Vec::new(),
            last_saved: None,
            warned_full: false,
            warned_failure: false,
        }
    }

    /// Look at the screen and save a picture if `trigger` says so; the
    /// picture's file name.
    pub fn capture(
        &mut self,
        rec: &mut Recording,
        qmp: &mut Qmp,
        trigger: Trigger,
    ) -> Option<String> {
        if rec.info.screenshots >= MAX_SCREENSHOTS {
            if !self.warned_full {
                self.warned_full = true;
                rec.warn(format!(
                    "{MAX_SCREENSHOTS} screenshots taken; no more are saved"
                ));
            }
            return None;
        }
        let look = match self.look(qmp) {
            Ok(look) => look,
            Err(e) => {
                if !self.warned_failure {
                    self.warned_failure = true;
                    rec.warn(format!("cannot take a screenshot: {}", error_chain(&*e)));
                }
                return None;
            }
        };
        let changed = look.key() != self.last_key.as_slice();
        if !should_save(trigger, changed, self.last_saved.map(|t| t.elapsed())) {
            return None;
        }
        match self.save(rec, &look, changed) {
            Ok(name) => {
                self.last_key = look.key().to_vec();
                self.last_saved = Some(Instant::now());
                Some(name)
            }
            Err(e) => {
                rec.warn(format!("cannot save a screenshot: {}", error_chain(&*e)));
                None
            }
        }
    }

    fn look(&self, qmp: &mut Qmp) -> Result<Look, Box<dyn std::error::Error + Send + Sync>> {
        let ppm = self.scratch.join("screen.ppm");
        let _ = fs::remove_file(&ppm);
        qmp.screendump_ppm(&ppm)?;
        let rgb = screen::read_ppm(&ppm)?;
        let _ = fs::remove_file(&ppm);
        // Text mode is a bonus: a failure to read it leaves the picture.
        let text = read_text(qmp, &self.scratch, rgb.width, rgb.height)
            .ok()
            .flatten();
        Ok(Look { rgb, text })
    }

    fn save(
        &self,
        rec: &mut Recording,
        look: &Look,
        changed: bool,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let n = rec.info.screenshots + 1;
        let name = format!("{n:04}.png");
        let png = screen::encode_png(&look.rgb)?;
        write(&self.dir.join(&name), &png)?;
        let text_name = match &look.text {
            Some((_, text)) => {
                let text_name = format!("{n:04}.txt");
                write(&self.dir.join(&text_name), text.as_bytes())?;
                Some(text_name)
            }
            None => None,
        };
        let uptime_ms = sys::uptime_ms();
        let entry = TimelineEntry {
            file: name.clone(),
            uptime_ms,
            utc: utc_rfc3339(sys::unix_seconds()),
            width: look.rgb.width,
            height: look.rgb.height,
            text: text_name,
            changed,
        };
        let line = serde_json::to_string(&entry)?;
        hiperiso_stick::session::append_line(&self.dir.join(files::TIMELINE_JSONL), &line)?;
        rec.info.screenshots = n;
        rec.save_info();
        Ok(name)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    fs::write(path, bytes)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The guest's text screen, when it shows one: the raw buffer and its text.
fn read_text(
    qmp: &mut Qmp,
    scratch: &Path,
    width: u32,
    height: u32,
) -> Result<Option<(Vec<u8>, String)>, QmpError> {
    let file = scratch.join("guest-mem.bin");
    let mut read = |address: u64, len: usize| -> Result<Vec<u8>, QmpError> {
        let _ = fs::remove_file(&file);
        qmp.pmemsave(address, len, &file)?;
        fs::read(&file).map_err(QmpError::Io)
    };
    let bda = read(BDA_START, BDA_LEN)?;
    let Some(mode) = screen::detect_text_mode(&bda, width, height) else {
        return Ok(None);
    };
    let raw = read(mode.address, mode.len())?;
    let text = screen::decode_text(&raw, mode.columns);
    Ok(Some((raw, text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hiperiso_stick::session::TimelineEntry;

    #[test]
    fn save_policy() {
        let s = |secs| Some(Duration::from_secs(secs));
        assert!(should_save(Trigger::Interval, true, s(1)));
        assert!(
            should_save(Trigger::Interval, false, None),
            "the first look"
        );
        assert!(!should_save(Trigger::Interval, false, s(5)));
        assert!(should_save(
            Trigger::Interval,
            false,
            s(TIMELINE_UNCHANGED_EVERY_S)
        ));
        assert!(should_save(Trigger::Final, true, s(0)));
        assert!(!should_save(Trigger::Final, false, s(600)));
        assert!(should_save(Trigger::Hotkey, false, s(0)));
    }

    #[test]
    fn timeline_line_names() {
        let entry = TimelineEntry {
            file: "0001.png".into(),
            uptime_ms: 12_345,
            utc: "2026-12-06T15:00:00Z".into(),
            width: 720,
            height: 400,
            text: Some("0001.txt".into()),
            changed: true,
        };
        let line = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            line,
            r#"{"file":"0001.png","uptime_ms":12345,"utc":"2026-12-06T15:00:00Z","width":720,"height":400,"text":"0001.txt","changed":true}"#
        );
        let graphics = TimelineEntry {
            text: None,
            changed: false,
            ..entry
        };
        let line = serde_json::to_string(&graphics).unwrap();
        assert!(line.contains(r#""text":null,"changed":false"#), "{line}");
        assert_eq!(
            serde_json::from_str::<TimelineEntry>(&line).unwrap(),
            graphics
        );
    }
}
