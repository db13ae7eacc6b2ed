//! Events to a webhook, as JSON or as an ntfy notification (plain text,
//! `Title` and `Priority` headers): the device's sound alerts (one POST when
//! an alert starts and one when it ends) and, from roomcam's server, a room's
//! device going offline and coming back. [`request`] is pure; [`Webhook`]
//! sends, in order and with retries; [`spawn`] sends a room's sound alerts.

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

/// What a webhook is told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WebhookEvent {
    /// A sound alert started or ended (the device).
    Sound(SoundEvent),
    /// The room's device lost its connection to the server (roomcam's server).
    DeviceOffline,
    /// The room's device is back, after `offline_for`.
    DeviceOnline { offline_for: Duration },
}

impl From<SoundEvent> for WebhookEvent {
    fn from(event: SoundEvent) -> Self {
        WebhookEvent::Sound(event)
    }
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

/// The request that tells `event` in `room`, heard (or seen) `at`.
pub fn request(format: WebhookFormat, room: &str, event: impl Into<WebhookEvent>, at: SystemTime) -> WebhookRequest {
    let event = event.into();
    match format {
        WebhookFormat::Json => {
            let mut body = serde_json::json!({ "room": room, "at": rfc3339(at) });
            match event {
                WebhookEvent::Sound(sound) => {
                    let (name, level_db) = match sound {
                        SoundEvent::Started { level_db, .. } => ("sound_start", level_db),
                        SoundEvent::Ended { peak_db } => ("sound_end", peak_db),
                    };
                    body["event"] = name.into();
                    // One decimal: the detector is not more exact than that.
                    body["level_db"] = ((f64::from(level_db) * 10.0).round() / 10.0).into();
                }
                WebhookEvent::DeviceOffline => body["event"] = "device_offline".into(),
                WebhookEvent::DeviceOnline { offline_for } => {
                    body["event"] = "device_online".into();
                    body["offline_s"] = offline_for.as_secs().into();
                }
            }
            WebhookRequest { headers: vec![("content-type", "application/json".into())], body: body.to_string() }
        }
        WebhookFormat::Ntfy => {
            let (title, priority, body) = match event {
                WebhookEvent::Sound(SoundEvent::Started { level_db, floor_db }) => (
                    format!("Sound in {room}"),
                    "high",
                    format!("Sound in {room}: {level_db:.0} dBFS, {:.0} dB over the room's floor", level_db - floor_db),
                ),
                WebhookEvent::Sound(SoundEvent::Ended { peak_db }) => (
                    format!("{room} is quiet again"),
                    "default",
                    format!("{room} is quiet again (peak {peak_db:.0} dBFS)"),
                ),
                WebhookEvent::DeviceOffline => (
                    format!("Camera in {room} offline"),
                    "high",
                    format!(
                        "The camera in {room} is offline since {} (its connection to the server ended)",
                        rfc3339(at)
                    ),
                ),
                WebhookEvent::DeviceOnline { offline_for } => (
                    format!("Camera in {room} back"),
                    "default",
                    format!("The camera in {room} is back online (offline for {} s)", offline_for.as_secs()),
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

/// A webhook's sender: events queued here are POSTed in order, each with
/// retries, by its own task. The task ends once every clone is dropped and
/// the queue is sent.
#[derive(Clone, Debug)]
pub struct Webhook {
    queue: mpsc::Sender<(String, WebhookEvent, SystemTime)>,
}

impl Webhook {
    /// Starts the task that sends to `url` (needs a tokio runtime).
    pub fn spawn(url: url::Url, format: WebhookFormat) -> Result<(Webhook, tokio::task::JoinHandle<()>), WebhookError> {
        let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build().map_err(WebhookError::Client)?;
        let (queue, mut queued) = mpsc::channel::<(String, WebhookEvent, SystemTime)>(QUEUE);
        let task = tokio::spawn(async move {
            let mut failing = false;
            while let Some((room, event, at)) = queued.recv().await {
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
        });
        Ok((Webhook { queue }, task))
    }

    /// Queues `event` of `room`, seen now; never waits (a full queue drops it, logged).
    pub fn tell(&self, room: &str, event: impl Into<WebhookEvent>) {
        self.tell_at(room, event, SystemTime::now());
    }

    pub fn tell_at(&self, room: &str, event: impl Into<WebhookEvent>, at: SystemTime) {
        // Closed: the sender was stopped (shutdown), nothing to say.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send((room.to_owned(), event.into(), at)) {
            warn!(room:% = room; "webhook: room {room}: {QUEUE} events already wait; this one is dropped");
        }
    }
}

/// Sends `room`'s alerts to `url` from its own tasks: one hears the
/// broadcast (never lagging behind a slow webhook), one sends in order.
pub fn spawn(
    url: url::Url,
    format: WebhookFormat,
    room: &str,
    mut sounds: broadcast::Receiver<RoomSound>,
) -> Result<tokio::task::JoinHandle<()>, WebhookError> {
    let (webhook, sender) = Webhook::spawn(url, format)?;
    let room = room.to_owned();
    tokio::spawn(async move {
        loop {
            match sounds.recv().await {
                Ok(RoomSound::Alert(event)) => webhook.tell(&room, event),
                Ok(RoomSound::Level { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                // Dropping the webhook lets the sender finish the queue and end.
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(sender)
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
    // reqwest's errors name the URL, and an ntfy token may be in it: logged without.
    let response = post.send().await.map_err(|e| WebhookError::Send(e.without_url()))?;
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
    fn device_offline_and_back_in_json_and_ntfy() {
        let offline: serde_json::Value =
            serde_json::from_str(&request(WebhookFormat::Json, "nursery", WebhookEvent::DeviceOffline, at()).body)
                .unwrap();
        assert_eq!(
            offline,
            serde_json::json!({"event": "device_offline", "room": "nursery", "at": "2026-12-03T15:30:07Z"})
        );
        let back = WebhookEvent::DeviceOnline { offline_for: Duration::from_secs(75) };
        let online: serde_json::Value =
            serde_json::from_str(&request(WebhookFormat::Json, "nursery", back, at()).body).unwrap();
        assert_eq!((&online["event"], &online["offline_s"]), (&"device_online".into(), &75.into()));
        let offline = request(WebhookFormat::Ntfy, "nursery", WebhookEvent::DeviceOffline, at());
        assert_eq!(header(&offline, "priority"), Some("high"));
        assert!(offline.body.contains("offline since 2026-12-03T15:30:07Z"), "{}", offline.body);
        let online = request(WebhookFormat::Ntfy, "nursery", back, at());
        assert_eq!(header(&online, "priority"), Some("default"));
        assert!(online.body.contains("back online"), "{}", online.body);
    }

    #[test]
    fn retries_wait_longer_each_time() {
        let waits: Vec<_> = (1..ATTEMPTS).map(|n| retry_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
    }

    #[tokio::test]
    async fn a_failed_request_s_error_does_not_repeat_the_url() {
        // Nothing listens on port 9 of loopback: refused at once.
        let url = url::Url::parse("http://u:pw_secret@127.0.0.1:9/topic?auth=tk_secret").unwrap();
        let client = reqwest::Client::new();
        let request = request(WebhookFormat::Json, "r", WebhookEvent::DeviceOffline, at());
        let error = send(&client, &url, &request).await.unwrap_err().to_string();
        assert!(!error.contains("secret") && !error.contains("127.0.0.1:9"), "{error}");
    }

    #[test]
    fn logged_urls_keep_their_secrets() {
        let url = url::Url::parse("https://u:secret@ntfy.example.org/topic?auth=token").unwrap();
        let shown = redacted(&url);
        assert!(!shown.contains("secret") && !shown.contains("token"), "{shown}");
    }
}
