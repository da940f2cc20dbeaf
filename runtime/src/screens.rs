//! The guest's screen as evidence: `screenshots/timeline.jsonl` (written by
//! hiperiso-init), each screenshot's text (`NNNN.txt`, exact VGA text mode;
//! else OCR by Tesseract when it is on PATH, cached as `NNNN.ocr.txt`), and
//! how long the screen stayed unchanged at the end.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The screenshots directory inside a session.
pub const SCREENSHOTS: &str = "screenshots";
/// The timeline file inside it.
pub const TIMELINE: &str = "timeline.jsonl";
/// A screen unchanged this long at the end of a session, with the guest not
/// booted, is a hang.
pub const HANG_MS: u64 = 60_000;

/// One line of `timeline.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Shot {
    /// The PNG's name inside `screenshots/`, e.g. `0001.png`.
    pub file: String,
    #[serde(default)]
    pub uptime_ms: Option<u64>,
    #[serde(default)]
    pub utc: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    /// The exact text-mode content's file, e.g. `0001.txt`.
    #[serde(default)]
    pub text: Option<String>,
    /// Whether the picture differs from the previous one.
    #[serde(default = "yes")]
    pub changed: bool,
}

fn yes() -> bool {
    true
}

/// The screenshots of a session, in time order: the timeline's when there
/// is one, else the PNGs by name (no times).
pub fn shots(session_dir: &Path) -> Vec<Shot> {
    let dir = session_dir.join(SCREENSHOTS);
    if let Ok(text) = std::fs::read_to_string(dir.join(TIMELINE)) {
        let mut shots: Vec<Shot> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if !shots.is_empty() {
            shots.sort_by_key(|s| (s.uptime_ms, s.file.clone()));
            return shots;
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|file| {
            let txt = file.replace(".png", ".txt");
            Shot {
                text: dir.join(&txt).is_file().then_some(txt),
                file,
                uptime_ms: None,
                utc: None,
                width: None,
                height: None,
                changed: true,
            }
        })
        .collect()
}

/// How a screenshot's text was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    /// The VGA text buffer, exact.
    TextMode,
    /// Tesseract (now, or cached in `NNNN.ocr.txt`).
    Ocr,
}

/// A screenshot's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenText {
    /// Relative to the session: `screenshots/0001.txt`.
    pub file: String,
    pub how: TextSource,
    pub text: String,
}

/// Whether `tesseract` can be run.
pub fn ocr_available() -> bool {
    Command::new("tesseract")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The text of `shot`: its `.txt`, else a cached `.ocr.txt`, else OCR when
/// `ocr` (the result is cached beside the PNG when the directory is
/// writable).
pub fn text_of(session_dir: &Path, shot: &Shot, ocr: bool) -> Option<ScreenText> {
    let dir = session_dir.join(SCREENSHOTS);
    let rel = |name: &str| format!("{SCREENSHOTS}/{name}");
    if let Some(name) = &shot.text
        && let Ok(text) = std::fs::read_to_string(dir.join(name))
    {
        return Some(ScreenText {
            file: rel(name),
            how: TextSource::TextMode,
            text,
        });
    }
    let stem = shot.file.strip_suffix(".png").unwrap_or(&shot.file);
    let cache_name = format!("{stem}.ocr.txt");
    let cache = dir.join(&cache_name);
    if let Ok(text) = std::fs::read_to_string(&cache) {
        return Some(ScreenText {
            file: rel(&cache_name),
            how: TextSource::Ocr,
            text,
        });
    }
    if !ocr {
        return None;
    }
    let text = run_ocr(&dir.join(&shot.file))?;
    // A read-only stick or logs copy: no cache, same answer.
    let _ = std::fs::write(&cache, &text);
    Some(ScreenText {
        file: rel(&cache_name),
        how: TextSource::Ocr,
        text,
    })
}

/// Tesseract on a PNG, scaled 2x first (QEMU's 9x16 VGA font reads much
/// better at twice the size); `None` when it cannot run.
pub fn run_ocr(png_path: &Path) -> Option<String> {
    let bytes = std::fs::read(png_path).ok()?;
    let picture = crate::picture::decode_png(&bytes).ok()?;
    let scaled = scale2x(&picture);
    let tmp = tempfile::Builder::new()
        .prefix("hiperiso-ocr")
        .suffix(".png")
        .tempfile()
        .ok()?;
    std::fs::write(tmp.path(), crate::picture::encode_png(&scaled)).ok()?;
    let out = Command::new("tesseract")
        .arg(tmp.path())
        .arg("stdout")
        .args(["--psm", "6"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scale2x(p: &crate::picture::Picture) -> crate::picture::Picture {
    let mut out = crate::picture::Picture::filled(p.width * 2, p.height * 2, [0; 3]);
    for y in 0..out.height {
        for x in 0..out.width {
            out.set(x, y, p.get(x / 2, y / 2));
        }
    }
    out
}

/// The last screen, quoted in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastScreen {
    /// `screenshots/0042.png`.
    pub screenshot: String,
    pub uptime_ms: Option<u64>,
    pub utc: Option<String>,
    /// Where the text came from: `screenshots/0042.txt` or `.ocr.txt`;
    /// `None` with no text (graphics mode and no Tesseract).
    pub text_file: Option<String>,
    pub text_source: Option<TextSource>,
    /// The text, trailing blank lines and spaces removed.
    pub text: Option<String>,
}

/// What the screenshots say, for `report.json`'s `screens`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScreenSummary {
    pub count: usize,
    /// Screenshots with text (text mode or OCR).
    pub with_text: usize,
    pub ocr: usize,
    /// How long the screen stayed unchanged at the end (ms), from the
    /// timeline; `None` without times.
    pub unchanged_at_end_ms: Option<u64>,
    pub last: Option<LastScreen>,
}

/// Trailing spaces and blank lines removed.
pub fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

/// How long the screen stayed unchanged at the end of `shots`.
pub fn unchanged_at_end_ms(shots: &[Shot]) -> Option<u64> {
    let last = shots.last()?.uptime_ms?;
    let since = shots
        .iter()
        .rev()
        .find(|s| s.changed)
        .or(shots.first())?
        .uptime_ms?;
    Some(last.saturating_sub(since))
}

/// The PNG of `shot`.
pub fn png_path(session_dir: &Path, shot: &Shot) -> PathBuf {
    session_dir.join(SCREENSHOTS).join(&shot.file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(file: &str, ms: u64, changed: bool) -> Shot {
        Shot {
            file: file.into(),
            uptime_ms: Some(ms),
            utc: None,
            width: None,
            height: None,
            text: None,
            changed,
        }
    }

    #[test]
    fn unchanged_time_counts_from_the_last_change() {
        let shots = [
            shot("1.png", 1000, true),
            shot("2.png", 3000, true),
            shot("3.png", 9000, false),
        ];
        assert_eq!(unchanged_at_end_ms(&shots), Some(6000));
        assert_eq!(tidy("a  \n\nb \n \n\n"), "a\n\nb");
    }

    #[test]
    fn the_timeline_is_read_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let shots_dir = dir.path().join(SCREENSHOTS);
        std::fs::create_dir(&shots_dir).unwrap();
        std::fs::write(
            shots_dir.join(TIMELINE),
            "{\"file\":\"0002.png\",\"uptime_ms\":20,\"text\":\"0002.txt\",\"changed\":true}\n\
             {\"file\":\"0001.png\",\"uptime_ms\":10,\"text\":null,\"changed\":true}\n",
        )
        .unwrap();
        std::fs::write(shots_dir.join("0002.txt"), "GNU GRUB  version 2.06\n").unwrap();
        let shots = shots(dir.path());
        assert_eq!(shots[0].file, "0001.png");
        let text = text_of(dir.path(), &shots[1], false).unwrap();
        assert_eq!(text.how, TextSource::TextMode);
        assert_eq!(text.file, "screenshots/0002.txt");
        assert!(text_of(dir.path(), &shots[0], false).is_none());
    }
}
