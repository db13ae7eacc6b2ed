//! Sound alerts to an MQTT broker, shaped for Home Assistant's discovery: a
//! `binary_sensor` (sound ON/OFF) and a `sensor` (the room's level in dB),
//! grouped under one device, both unavailable while the device is off.
//!
//! [`MqttAlerts`] and [`Outbox`] are pure (what to publish, and what of it
//! still matters when the broker is slow or gone); [`spawn`] is the I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{info, warn};
use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, Transport};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{RoomSound, SoundEvent};

/// Where `[alerts] mqtt` points: `mqtt://[user:pass@]host[:port]` or `mqtts://`.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttBroker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerUrlError {
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    #[error("{0:?} must be an mqtt:// or mqtts:// URL")]
    Scheme(String),
    #[error("{0:?} has no broker host")]
    NoHost(String),
    #[error("{0:?}: a broker URL has no path, query or fragment")]
    Extra(String),
}

impl MqttBroker {
    pub fn parse(text: &str) -> Result<MqttBroker, BrokerUrlError> {
        let url = url::Url::parse(text).map_err(|_| BrokerUrlError::NotAUrl(redacted(text)))?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(BrokerUrlError::Scheme(redacted(text))),
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err(BrokerUrlError::NoHost(redacted(text))),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(BrokerUrlError::Extra(redacted(text)));
        }
        let decode = |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into());
        let username = (!url.username().is_empty()).then(|| decode(url.username())).flatten();
        let password = url.password().and_then(decode);
        Ok(MqttBroker { tls, port: url.port().unwrap_or(if tls { 8883 } else { 1883 }), host, username, password })
    }
}

/// The URL without its password, for error messages and logs.
fn redacted(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => text.to_owned(),
    }
}

/// Logs and `Debug` (the config is printed in errors) never show the password.
impl std::fmt::Display for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = self.username.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        write!(f, "{scheme}://{user}{}:{}", self.host, self.port)
    }
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MqttBroker({self})")
    }
}

/// A room's name as one MQTT topic level and Home Assistant id: `+`, `#`
/// and `/` would change what a topic means, and discovery ids allow only
/// `[A-Za-z0-9_-]`, so everything else becomes `_`.
pub fn topic_level(room: &str) -> String {
    let level: String =
        room.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if level.is_empty() { "_".into() } else { level }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

impl Publish {
    /// Level readings are the only thing worth losing: the next one is a
    /// second away, while a lost state would stay wrong until the next alert.
    pub fn is_expendable(&self) -> bool {
        !self.retain
    }
}

/// Level readings go out at most this often: Home Assistant records every
/// state, and four a second would fill its database for a meter nobody reads.
pub const LEVEL_EVERY: Duration = Duration::from_secs(1);

/// What one room publishes, and when.
#[derive(Debug)]
pub struct MqttAlerts {
    room: String,
    level: String,
    sounding: bool,
    last_level: Option<Instant>,
    /// The loudest reading since the last one published.
    loudest_db: f32,
}

pub const AVAILABLE: &str = "online";
pub const UNAVAILABLE: &str = "offline";

impl MqttAlerts {
    pub fn new(room: &str) -> MqttAlerts {
        MqttAlerts {
            room: room.to_owned(),
            level: topic_level(room),
            sounding: false,
            last_level: None,
            loudest_db: f32::NEG_INFINITY,
        }
    }

    pub fn availability_topic(&self) -> String {
        format!("roomcam/{}/availability", self.level)
    }

    pub fn sound_topic(&self) -> String {
        format!("roomcam/{}/sound", self.level)
    }

    pub fn level_topic(&self) -> String {
        format!("roomcam/{}/level", self.level)
    }

    /// The broker says `offline` for a device that vanished without a word
    /// (crash, power loss, cable): MQTT's last will.
    pub fn last_will(&self) -> Publish {
        Publish { topic: self.availability_topic(), payload: UNAVAILABLE.into(), retain: true }
    }

    /// A clean stop says the same itself.
    pub fn stopping(&self) -> Publish {
        self.last_will()
    }

    /// Everything a broker (which may have lost its retained messages, or
    /// be a new one) needs on each connection: discovery, availability and
    /// the current sound state.
    pub fn on_connected(&self) -> Vec<Publish> {
        let availability = self.availability_topic();
        let device = serde_json::json!({
            "identifiers": [format!("roomcam_{}", self.level)],
            "name": format!("roomcam {}", self.room),
            "manufacturer": "roomcam",
            "model": "roomcam",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        let sound = serde_json::json!({
            "name": "Sound",
            "unique_id": format!("roomcam_{}_sound", self.level),
            "device_class": "sound",
            "state_topic": self.sound_topic(),
            "payload_on": "ON",
            "payload_off": "OFF",
            "availability_topic": availability,
            "payload_available": AVAILABLE,
            "payload_not_available": UNAVAILABLE,
            "device": device,
        });
        let level = serde_json::json!({
            "name": "Sound level",
            "unique_id": format!("roomcam_{}_level", self.level),
            "state_topic": self.level_topic(),
            "unit_of_measurement": "dB",
            "state_class": "measurement",
            "availability_topic": availability,
            "payload_available": AVAILABLE,
            "payload_not_available": UNAVAILABLE,
            "device": device,
        });
        let node = format!("roomcam_{}", self.level);
        vec![
            Publish {
                topic: format!("homeassistant/binary_sensor/{node}/sound/config"),
                payload: sound.to_string(),
                retain: true,
            },
            Publish {
                topic: format!("homeassistant/sensor/{node}/level/config"),
                payload: level.to_string(),
                retain: true,
            },
            Publish { topic: availability, payload: AVAILABLE.into(), retain: true },
            self.sound_state(),
        ]
    }

    fn sound_state(&self) -> Publish {
        let payload = if self.sounding { "ON" } else { "OFF" };
        Publish { topic: self.sound_topic(), payload: payload.into(), retain: true }
    }

    pub fn on_sound(&mut self, sound: RoomSound, now: Instant) -> Option<Publish> {
        match sound {
            RoomSound::Alert(event) => {
                self.sounding = matches!(event, SoundEvent::Started { .. });
                Some(self.sound_state())
            }
            RoomSound::Level { level_db } => {
                self.loudest_db = self.loudest_db.max(level_db);
                if self.last_level.is_some_and(|last| now.duration_since(last) < LEVEL_EVERY) {
                    return None;
                }
                self.last_level = Some(now);
                let payload = format!("{:.1}", self.loudest_db);
                self.loudest_db = f32::NEG_INFINITY;
                Some(Publish { topic: self.level_topic(), payload, retain: false })
            }
        }
    }
}

/// What waits for the broker. Only the newest message of a topic matters
/// (all but the level are retained states), so a newer one replaces an
/// older one and the outbox never holds more than one per topic, however
/// long the broker is away; level readings are dropped while it is.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Publish>,
}

impl Outbox {
    pub fn push(&mut self, publish: Publish) {
        self.queue.retain(|queued| queued.topic != publish.topic);
        self.queue.push_back(publish);
    }

    /// The broker is gone: a reading will be stale by the time it is back.
    pub fn drop_expendable(&mut self) {
        self.queue.retain(|queued| !queued.is_expendable());
    }

    pub fn pop(&mut self) -> Option<Publish> {
        self.queue.pop_front()
    }

    /// Back at the front, when the client could not take it yet.
    pub fn put_back(&mut self, publish: Publish) {
        self.queue.push_front(publish);
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Reconnection back-off: doubling from one second, at most a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtts:// TLS set-up: {0}")]
    Tls(String),
}

/// A short keep-alive, so that the broker tells `offline` (the will) within
/// about 45 s (1.5 × keep-alive) of a power cut, when no TCP close arrives.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Requests the client queues before the event loop takes them: a few
/// states and one reading; more waits in the [`Outbox`].
const CLIENT_QUEUE: usize = 8;
/// How long a clean stop waits for `offline` to reach the broker.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The running MQTT task; [`MqttTask::stop`] says `offline` and disconnects.
pub struct MqttTask {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttTask {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

enum Link {
    Connected,
    Lost(ConnectionError),
    /// Our DISCONNECT went out: the clean stop is done.
    Closed,
}

/// Publishes `room`'s sounds to `broker` from its own task: the media
/// threads only ever see a broadcast channel, which never waits for anyone.
/// `ca`: a CA of the user's own the broker's certificate is signed by
/// (`[alerts] mqtt-ca`), besides the system's roots.
pub fn spawn(
    broker: &MqttBroker,
    ca: Option<&std::path::Path>,
    room: &str,
    sounds: broadcast::Receiver<RoomSound>,
) -> Result<MqttTask, MqttError> {
    let alerts = MqttAlerts::new(room);
    let mut options = MqttOptions::new(format!("roomcam-{}", topic_level(room)), &broker.host, broker.port);
    options.set_keep_alive(KEEP_ALIVE).set_clean_session(true).set_request_channel_capacity(CLIENT_QUEUE);
    if let (Some(user), password) = (&broker.username, &broker.password) {
        options.set_credentials(user, password.clone().unwrap_or_default());
    }
    let will = alerts.last_will();
    options.set_last_will(LastWill::new(will.topic, will.payload, QoS::AtLeastOnce, will.retain));
    if broker.tls {
        let tls = crate::util::client_config(ca).map_err(MqttError::Tls)?;
        options.set_transport(Transport::tls_with_config(tls.into()));
    }
    let (client, mut eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    let (links_tx, links) = mpsc::unbounded_channel();
    // The event loop has its own task: a connection attempt is never cut
    // short by a sound arriving (poll() restarts a connect it is cancelled in).
    let driver = tokio::spawn(async move {
        let mut failures = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    if links_tx.send(Link::Connected).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    let _ = links_tx.send(Link::Closed);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    if links_tx.send(Link::Lost(e)).is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    failures += 1;
                }
            }
        }
    });
    let (stop_tx, stop) = oneshot::channel();
    let broker = broker.to_string();
    let task = tokio::spawn(async move {
        publisher(alerts, broker, client, links, sounds, stop).await;
        driver.abort();
    });
    Ok(MqttTask { stop: Some(stop_tx), task })
}

async fn publisher(
    mut alerts: MqttAlerts,
    broker: String,
    client: AsyncClient,
    mut links: mpsc::UnboundedReceiver<Link>,
    mut sounds: broadcast::Receiver<RoomSound>,
    mut stop: oneshot::Receiver<()>,
) {
    let room = alerts.room.clone();
    let mut outbox = Outbox::default();
    let mut connected = false;
    // One line per outage, not one per attempt.
    let mut outage_logged = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            link = links.recv() => match link {
                Some(Link::Connected) => {
                    info!(room:% = room; "mqtt: room {room}: connected to {broker}");
                    connected = true;
                    outage_logged = false;
                    for publish in alerts.on_connected() {
                        outbox.push(publish);
                    }
                }
                Some(Link::Lost(e)) => {
                    if connected || !outage_logged {
                        let what = if connected { "lost" } else { "cannot reach" };
                        warn!(room:% = room; "mqtt: room {room}: {what} {broker}: {e}; retrying with back-off");
                        outage_logged = true;
                    }
                    connected = false;
                    outbox.drop_expendable();
                }
                Some(Link::Closed) | None => return,
            },
            sound = sounds.recv() => match sound {
                Ok(sound) => {
                    if let Some(publish) = alerts.on_sound(sound, Instant::now())
                        && (connected || !publish.is_expendable())
                    {
                        outbox.push(publish);
                    }
                }
                // Missed levels are nothing; a missed alert edge is corrected by the next one.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        if connected {
            flush(&client, &mut outbox);
        }
    }
    if connected {
        let offline = alerts.stopping();
        let said = async {
            let _ = client.publish(offline.topic, QoS::AtLeastOnce, offline.retain, offline.payload).await;
            let _ = client.disconnect().await;
            while let Some(link) = links.recv().await {
                if matches!(link, Link::Closed | Link::Lost(_)) {
                    return;
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE, said).await.is_err() {
            warn!(room:% = room; "mqtt: room {room}: {broker} did not take `offline` within {STOP_GRACE:?}; its last will says it");
        } else {
            info!(room:% = room; "mqtt: room {room}: told {broker} offline");
        }
    }
}

/// Hands the client what it can take now; the rest stays in the outbox.
fn flush(client: &AsyncClient, outbox: &mut Outbox) {
    while let Some(publish) = outbox.pop() {
        let qos = if publish.is_expendable() { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        if client.try_publish(publish.topic.clone(), qos, publish.retain, publish.payload.clone()).is_err() {
            outbox.put_back(publish);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = MqttBroker::parse("mqtt://user:p%40ss@broker.local:1884").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "broker.local", 1884));
        assert_eq!((b.username.as_deref(), b.password.as_deref()), (Some("user"), Some("p@ss")));
        assert_eq!(b.to_string(), "mqtt://user@broker.local:1884");
        assert!(!format!("{b:?}").contains("p@ss"));
        let b = MqttBroker::parse("mqtts://ha.example.org").unwrap();
        assert_eq!((b.tls, b.port, b.username), (true, 8883, None));
        assert_eq!(MqttBroker::parse("mqtt://10.0.0.2/").unwrap().port, 1883);
        assert_eq!(MqttBroker::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        assert!(matches!(MqttBroker::parse("http://x"), Err(BrokerUrlError::Scheme(_))));
        assert!(matches!(MqttBroker::parse("broker:1883"), Err(BrokerUrlError::Scheme(_))));
        assert!(matches!(MqttBroker::parse("nonsense"), Err(BrokerUrlError::NotAUrl(_))));
        assert!(matches!(MqttBroker::parse("mqtt://b/topic"), Err(BrokerUrlError::Extra(_))));
        let err = MqttBroker::parse("http://u:secret@x").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn room_names_cannot_change_what_a_topic_means() {
        assert_eq!(topic_level("nursery"), "nursery");
        assert_eq!(topic_level("kids/+/#"), "kids____");
        assert_eq!(topic_level("Lea's room"), "Lea_s_room");
        assert_eq!(topic_level(""), "_");
        let alerts = MqttAlerts::new("a/b#");
        assert_eq!(alerts.sound_topic(), "roomcam/a_b_/sound");
    }

    fn json(publish: &Publish) -> serde_json::Value {
        serde_json::from_str(&publish.payload).unwrap()
    }

    #[test]
    fn discovery_names_both_sensors_of_one_device() {
        let alerts = MqttAlerts::new("nursery");
        let published = alerts.on_connected();
        let topics: Vec<_> = published.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/roomcam_nursery/sound/config",
                "homeassistant/sensor/roomcam_nursery/level/config",
                "roomcam/nursery/availability",
                "roomcam/nursery/sound",
            ]
        );
        assert!(published.iter().all(|p| p.retain));
        let (sound, level) = (json(&published[0]), json(&published[1]));
        assert_eq!(sound["unique_id"], "roomcam_nursery_sound");
        assert_eq!(sound["device_class"], "sound");
        assert_eq!(sound["state_topic"], "roomcam/nursery/sound");
        assert_eq!((&sound["payload_on"], &sound["payload_off"]), (&"ON".into(), &"OFF".into()));
        assert_eq!(level["unique_id"], "roomcam_nursery_level");
        assert_eq!(level["unit_of_measurement"], "dB");
        assert_eq!(level["state_topic"], "roomcam/nursery/level");
        for config in [&sound, &level] {
            assert_eq!(config["availability_topic"], "roomcam/nursery/availability");
            assert_eq!(config["payload_not_available"], "offline");
            assert_eq!(config["device"]["identifiers"][0], "roomcam_nursery");
        }
        assert_eq!(sound["device"], level["device"]);
        assert_eq!(published[2].payload, "online");
        assert_eq!(published[3].payload, "OFF");
        assert_eq!(alerts.last_will(), Publish { topic: topics[2].into(), payload: "offline".into(), retain: true });
    }

    #[test]
    fn alerts_are_retained_states_and_a_reconnect_repeats_the_current_one() {
        let mut alerts = MqttAlerts::new("nursery");
        let now = Instant::now();
        let on = alerts.on_sound(RoomSound::Alert(SoundEvent::Started { level_db: -18.0, floor_db: -40.0 }), now);
        assert_eq!(on, Some(Publish { topic: "roomcam/nursery/sound".into(), payload: "ON".into(), retain: true }));
        assert_eq!(alerts.on_connected()[3].payload, "ON");
        let off = alerts.on_sound(RoomSound::Alert(SoundEvent::Ended { peak_db: -12.0 }), now).unwrap();
        assert_eq!((off.payload.as_str(), off.retain), ("OFF", true));
        assert_eq!(alerts.on_connected()[3].payload, "OFF");
    }

    #[test]
    fn levels_at_most_once_a_second_with_the_loudest_in_between() {
        let mut alerts = MqttAlerts::new("nursery");
        let start = Instant::now();
        let level = |alerts: &mut MqttAlerts, ms: u64, db: f32| {
            alerts.on_sound(RoomSound::Level { level_db: db }, start + Duration::from_millis(ms)).map(|p| p.payload)
        };
        assert_eq!(level(&mut alerts, 0, -40.0).as_deref(), Some("-40.0"));
        assert_eq!(level(&mut alerts, 250, -30.0), None);
        assert_eq!(level(&mut alerts, 500, -35.0), None);
        assert_eq!(level(&mut alerts, 750, -38.0), None);
        assert_eq!(level(&mut alerts, 1000, -39.0).as_deref(), Some("-30.0"));
        assert_eq!(level(&mut alerts, 1250, -41.0), None);
        let reading = alerts.on_sound(RoomSound::Level { level_db: -42.0 }, start + Duration::from_millis(2000));
        assert_eq!(reading.as_ref().map(|p| (p.topic.as_str(), p.retain)), Some(("roomcam/nursery/level", false)));
        assert_eq!(reading.unwrap().payload, "-41.0");
    }

    #[test]
    fn the_outbox_keeps_the_newest_of_each_topic_and_drops_levels_first() {
        let mut outbox = Outbox::default();
        let state = |payload: &str| Publish { topic: "s".into(), payload: payload.into(), retain: true };
        let reading = |payload: &str| Publish { topic: "l".into(), payload: payload.into(), retain: false };
        for i in 0..100 {
            outbox.push(state(if i % 2 == 0 { "ON" } else { "OFF" }));
            outbox.push(reading(&i.to_string()));
        }
        assert_eq!(outbox.len(), 2);
        outbox.drop_expendable();
        assert_eq!(outbox.pop(), Some(state("OFF")));
        assert!(outbox.is_empty());
        outbox.push(reading("1"));
        outbox.push(state("ON"));
        let first = outbox.pop().unwrap();
        outbox.put_back(first.clone());
        assert_eq!(outbox.pop(), Some(first));
    }

    #[test]
    fn back_off_doubles_up_to_a_minute() {
        let waits: Vec<_> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
