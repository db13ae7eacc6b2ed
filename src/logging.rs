//! Logs go to journald when systemd started us with stderr connected to the
//! journal, and to stderr otherwise. `RUST_LOG` wins over the configured level.

use std::os::unix::fs::MetadataExt;

/// True when `JOURNAL_STREAM` names the device:inode of our own stderr,
/// which is how systemd says "your stderr is the journal".
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.split_once(':') else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        // webrtc-rs is chatty at info; keep the operator's log readable.
        format!("{level},webrtc=warn,rtc=warn,rtc_ice=warn,rtc_dtls=warn,socketioxide=warn,engineioxide=warn")
    });
    if stderr_is_journal()
        && let Ok(journal) = systemd_journal_logger::JournalLog::new()
    {
        let max =
            filter.split(',').next().and_then(|l| l.parse::<log::LevelFilter>().ok()).unwrap_or(log::LevelFilter::Info);
        if journal.with_syslog_identifier("roomcam".into()).install().is_ok() {
            log::set_max_level(max);
            return;
        }
    }
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr)
        .try_init();
}
