//! Sound alerts to a webhook: one POST when an alert starts and one when it
//! ends, as JSON or as an ntfy notification (plain text, `Title` and
//! `Priority` headers). [`request`] is pure; [`spawn`] sends, with retries.

use std::time::{Duration, SystemTime};

use log::{info, warn};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::{RoomSound, SoundEvent};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// `{"event", "room", "level_db", "at"}`.
    #[default]
    Json,
    /// <https://ntfy.sh>: the body is the message, headers carry the rest.
    Ntfy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRequest {
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// `at` as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The request that tells `event` in `room`, heard `at`.
pub fn request(format: WebhookFormat, room: &str, event: SoundEvent, at: SystemTime) -> WebhookRequest {
    let (name, level_db) = match event {
        SoundEvent::Started { level_db, .. } => ("sound_start", level_db),
        SoundEvent::Ended { peak_db } => ("sound_end", peak_db),
    };
    match format {
        WebhookFormat::Json => WebhookRequest {
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::json!({
                "event": name,
                "room": room,
                // One decimal: the detector is not more exact than that.
                "level_db": (f64::from(level_db) * 10.0).round() / 10.0,
                "at": rfc3339(at),
            })
            .to_string(),
        },
        WebhookFormat::Ntfy => {
            let (title, priority, body) = match event {
                SoundEvent::Started { level_db, floor_db } => (
                    format!("Sound in {room}"),
                    "high",
                    format!("Sound in {room}: {level_db:.0} dBFS, {:.0} dB over the room's floor", level_db - floor_db),
                ),
                SoundEvent::Ended { peak_db } => (
                    format!("{room} is quiet again"),
                    "default",
                    format!("{room} is quiet again (peak {peak_db:.0} dBFS)"),
                ),
            };
            WebhookRequest {
                headers: vec![
                    ("content-type", "text/plain; charset=utf-8".into()),
                    ("title", header_text(&title)),
                    ("priority", priority.into()),
                ],
                body,
            }
        }
    }
}

/// HTTP headers are ASCII; a room named in another script goes as an RFC
/// 2047 encoded word, which ntfy decodes.
fn header_text(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return text.to_owned();
    }
    use base64::Engine;
    format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text))
}

/// Attempts per alert: the first and three retries.
pub const ATTEMPTS: u32 = 4;

/// The wait before retry `n` (1-based): 1 s, 2 s, 4 s.
pub fn retry_wait(n: u32) -> Duration {
    Duration::from_secs(1 << (n - 1).min(5))
}

/// Each attempt's limit: a webhook that hangs must not hold up the next alert forever.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Alerts waiting to be sent while one is retried; more are dropped (and logged).
const QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{0}")]
    Send(#[source] reqwest::Error),
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
}

/// Sends `room`'s alerts to `url` from its own tasks: one hears the
/// broadcast (never lagging behind a slow webhook), one sends in order.
pub fn spawn(
    url: url::Url,
    format: WebhookFormat,
    room: &str,
    mut sounds: broadcast::Receiver<RoomSound>,
) -> Result<tokio::task::JoinHandle<()>, WebhookError> {
    let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().map_err(WebhookError::Client)?;
    let (queue, mut queued) = mpsc::channel::<(SoundEvent, SystemTime)>(QUEUE);
    let room = room.to_owned();
    let listener_room = room.clone();
    let listener = tokio::spawn(async move {
        loop {
            match sounds.recv().await {
                Ok(RoomSound::Alert(event)) => {
                    if queue.try_send((event, SystemTime::now())).is_err() {
                        warn!(room:% = listener_room; "webhook: room {listener_room}: {QUEUE} alerts already wait; this one is dropped");
                    }
                }
                Ok(RoomSound::Level { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(tokio::spawn(async move {
        let mut failing = false;
        while let Some((event, at)) = queued.recv().await {
            let request = request(format, &room, event, at);
            match send_with_retries(&client, &url, &request).await {
                Ok(()) if failing => {
                    info!(room:% = room; "webhook: room {room}: {} works again", redacted(&url));
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    warn!(room:% = room; "webhook: room {room}: {} failed after {ATTEMPTS} attempts: {e}", redacted(&url));
                    failing = true;
                }
            }
        }
        listener.abort();
    }))
}

async fn send_with_retries(
    client: &reqwest::Client,
    url: &url::Url,
    request: &WebhookRequest,
) -> Result<(), WebhookError> {
    let mut attempt = 1;
    loop {
        let result = send(client, url, request).await;
        if result.is_ok() || attempt == ATTEMPTS {
            return result;
        }
        tokio::time::sleep(retry_wait(attempt)).await;
        attempt += 1;
    }
}

async fn send(client: &reqwest::Client, url: &url::Url, request: &WebhookRequest) -> Result<(), WebhookError> {
    let mut post = client.post(url.clone()).body(request.body.clone());
    for (name, value) in &request.headers {
        post = post.header(*name, value);
    }
    let response = post.send().await.map_err(WebhookError::Send)?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(WebhookError::Status(status)),
    }
}

/// The URL without credentials (an ntfy token may be in it), for logs.
pub fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.set_query(url.query().map(|_| "…"));
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        // 2026-12-03T15:30:07Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_311_807)
    }

    const START: SoundEvent = SoundEvent::Started { level_db: -18.04, floor_db: -40.0 };
    const END: SoundEvent = SoundEvent::Ended { peak_db: -12.0 };

    fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
        request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at()), "2026-12-03T15:30:07Z");
    }

    #[test]
    fn json_start_and_end() {
        let start = request(WebhookFormat::Json, "nursery", START, at());
        assert_eq!(header(&start, "content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&start.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"event": "sound_start", "room": "nursery", "level_db": -18.0, "at": "2026-12-03T15:30:07Z"})
        );
        let end: serde_json::Value =
            serde_json::from_str(&request(WebhookFormat::Json, "nursery", END, at()).body).unwrap();
        assert_eq!((&end["event"], &end["level_db"]), (&"sound_end".into(), &(-12.0).into()));
    }

    #[test]
    fn ntfy_start_is_high_priority_and_end_default() {
        let start = request(WebhookFormat::Ntfy, "nursery", START, at());
        assert_eq!(header(&start, "priority"), Some("high"));
        assert_eq!(header(&start, "title"), Some("Sound in nursery"));
        assert_eq!(start.body, "Sound in nursery: -18 dBFS, 22 dB over the room's floor");
        let end = request(WebhookFormat::Ntfy, "nursery", END, at());
        assert_eq!(header(&end, "priority"), Some("default"));
        assert!(end.body.contains("quiet again") && end.body.contains("-12"), "{}", end.body);
    }

    #[test]
    fn a_room_in_another_script_is_an_encoded_word_in_the_title() {
        let start = request(WebhookFormat::Ntfy, "Детская", START, at());
        let title = header(&start, "title").unwrap();
        assert!(title.is_ascii() && title.starts_with("=?UTF-8?B?"), "{title}");
        assert!(start.body.contains("Детская"));
    }

    #[test]
    fn retries_wait_longer_each_time() {
        let waits: Vec<_> = (1..ATTEMPTS).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
    }

    #[test]
    fn logged_urls_keep_their_secrets() {
        let url = url::Url::parse("https://u:secret@ntfy.example.org/topic?auth=token").unwrap();
        let shown = redacted(&url);
        assert!(!shown.contains("secret") && !shown.contains("token"), "{shown}");
    }
}
