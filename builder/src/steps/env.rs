//! The fixed environment of every step (part of its key).

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time (for KBUILD_BUILD_TIMESTAMP).
pub fn utc_timestamp(epoch: u64) -> String {
    let (year, month, day, hour, minute, second) =
        hiperiso_stick::time::utc_parts(i64::try_from(epoch).unwrap_or(i64::MAX));
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// The fixed environment of every step (part of the key).
pub fn step_env(step: &str, epoch: u64) -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("TZ", "UTC"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("SOURCE_DATE_EPOCH", &epoch.to_string()),
        ("KBUILD_BUILD_USER", "hiperiso"),
        ("KBUILD_BUILD_HOST", "hiperiso"),
        ("KBUILD_BUILD_TIMESTAMP", &utc_timestamp(epoch)),
        ("HIPERISO_STEP", step),
        ("out", "/out"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_704_067_200), "2024-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(951_827_696), "2000-02-29 12:34:56 UTC");
    }

    #[test]
    fn env_is_fixed() {
        let env = step_env("x", 5);
        let get = |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SOURCE_DATE_EPOCH"), Some("5"));
        assert_eq!(get("TZ"), Some("UTC"));
        assert_eq!(get("LC_ALL"), Some("C.UTF-8"));
        assert!(get("JOBS").is_none(), "JOBS must stay out of the key");
    }
}
