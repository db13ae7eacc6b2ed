//! The `roomcam` data channel: what the device tells a viewer's page beside
//! the media (sound alerts, the room's level) and what the page asks of the
//! device (listen-only). JSON text messages, one object each, with a `type`.
//!
//! It rides the peer connection, not the signaling server, so it works the
//! same on classic servers, which relay nothing but SDP and candidates.
//! Both sides open it as a negotiated channel (id 0) on every connection:
//! no in-band handshake, and whichever side offers carries it in its SDP.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};

use crate::alerts::{ActiveAlert, RoomSound, SoundEvent, SoundTap};

pub const LABEL: &str = "roomcam";
/// The SCTP stream both sides agree on without asking.
pub const STREAM_ID: u16 = 0;
/// Larger requests are not JSON this page would send.
const MAX_REQUEST_BYTES: usize = 1024;

pub fn channel_init() -> RTCDataChannelInit {
    RTCDataChannelInit { ordered: true, negotiated: Some(STREAM_ID), ..Default::default() }
}

/// Device to page.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeviceMessage {
    /// First on every opened channel: the state a new page needs.
    Hello { alert: Option<AlertNow>, listen_only: bool },
    /// An alert started (`level_db` the band level, `over_floor_db` above
    /// the room's floor) or ended (`level_db` its peak). `at`: ms since
    /// the Unix epoch, the device's clock.
    Alert { state: AlertState, level_db: f32, over_floor_db: Option<f32>, at: u64 },
    /// The room's loudest band level of the last quarter second, dBFS.
    Level { db: f32 },
    /// The device's answer to a listen-only request: what it does now.
    ListenOnly { on: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertState {
    Start,
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AlertNow {
    pub since: u64,
    pub level_db: f32,
}

/// Page to device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ViewerRequest {
    /// Stop (`on`) or resume sending video to this viewer; audio goes on.
    ListenOnly { on: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("binary message ({0} bytes); requests are JSON text")]
    Binary(usize),
    #[error("request of {0} bytes is over the {MAX_REQUEST_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a request: {0}")]
    Malformed(String),
}

pub fn parse_request(is_text: bool, data: &[u8]) -> Result<ViewerRequest, RequestError> {
    if !is_text {
        return Err(RequestError::Binary(data.len()));
    }
    if data.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge(data.len()));
    }
    serde_json::from_slice(data).map_err(|e| RequestError::Malformed(e.to_string()))
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Levels to one decimal: the page shows whole dB, and the JSON stays short.
fn tenth(db: f32) -> f32 {
    (db * 10.0).round() / 10.0
}

impl DeviceMessage {
    pub fn hello(alert: Option<ActiveAlert>, listen_only: bool) -> DeviceMessage {
        let alert = alert.map(|a| AlertNow { since: epoch_ms(a.since), level_db: tenth(a.level_db) });
        DeviceMessage::Hello { alert, listen_only }
    }

    pub fn from_sound(sound: RoomSound, at: SystemTime) -> DeviceMessage {
        let at = epoch_ms(at);
        match sound {
            RoomSound::Level { level_db } => DeviceMessage::Level { db: tenth(level_db) },
            RoomSound::Alert(SoundEvent::Started { level_db, floor_db }) => DeviceMessage::Alert {
                state: AlertState::Start,
                level_db: tenth(level_db),
                over_floor_db: Some(tenth(level_db - floor_db)),
                at,
            },
            RoomSound::Alert(SoundEvent::Ended { peak_db }) => {
                DeviceMessage::Alert { state: AlertState::End, level_db: tenth(peak_db), over_floor_db: None, at }
            }
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("device messages are plain data")
    }
}

/// What the channel needs of its peer.
pub(super) trait ChannelOwner: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Applies a listen-only request; returns what the peer now does.
    fn set_listen_only(&self, on: bool) -> bool;
    fn listen_only(&self) -> bool;
}

/// Runs the channel until it closes: hello on open, then the room's sound
/// as it is heard, and the page's requests as they come.
pub(super) async fn serve(owner: Arc<impl ChannelOwner>, channel: Arc<dyn DataChannel>, tap: Option<SoundTap>) {
    let id = owner.id().to_owned();
    let mut sound = tap.as_ref().map(SoundTap::subscribe);
    let mut open = false;
    loop {
        tokio::select! {
            event = channel.poll() => {
                let Some(event) = event else { break };
                match event {
                    DataChannelEvent::OnOpen => {
                        open = true;
                        debug!("peer {id}: the {LABEL} channel is open");
                        let hello = DeviceMessage::hello(tap.as_ref().and_then(SoundTap::active), owner.listen_only());
                        send(&id, &*channel, &hello).await;
                    }
                    DataChannelEvent::OnMessage(message) => {
                        match parse_request(message.is_string, &message.data) {
                            Ok(ViewerRequest::ListenOnly { on }) => {
                                let now = owner.set_listen_only(on);
                                send(&id, &*channel, &DeviceMessage::ListenOnly { on: now }).await;
                            }
                            Err(e) => warn!("peer {id}: {LABEL} channel: {e}; ignored"),
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
            heard = next_sound(&mut sound) => match heard {
                Ok(heard) if open => send(&id, &*channel, &DeviceMessage::from_sound(heard, SystemTime::now())).await,
                Ok(_) => {}
                // Levels are dropped first by nature: they are most of it.
                Err(broadcast::error::RecvError::Lagged(n)) => debug!("peer {id}: {n} room sounds not told (slow channel)"),
                Err(broadcast::error::RecvError::Closed) => sound = None,
            },
        }
    }
    info!("peer {id}: the {LABEL} channel closed");
}

async fn next_sound(
    sound: &mut Option<broadcast::Receiver<RoomSound>>,
) -> Result<RoomSound, broadcast::error::RecvError> {
    match sound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(id: &str, channel: &dyn DataChannel, message: &DeviceMessage) {
    if let Err(e) = channel.send_text(&message.to_json()).await {
        debug!("peer {id}: {LABEL} channel send: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn alerts_and_levels_are_json_the_page_reads() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let start =
            DeviceMessage::from_sound(RoomSound::Alert(SoundEvent::Started { level_db: -21.04, floor_db: -40.0 }), at);
        assert_eq!(
            start.to_json(),
            r#"{"type":"alert","state":"start","level_db":-21.0,"over_floor_db":19.0,"at":1700000000123}"#
        );
        let end = DeviceMessage::from_sound(RoomSound::Alert(SoundEvent::Ended { peak_db: -12.0 }), at);
        assert_eq!(
            end.to_json(),
            r#"{"type":"alert","state":"end","level_db":-12.0,"over_floor_db":null,"at":1700000000123}"#
        );
        let level = DeviceMessage::from_sound(RoomSound::Level { level_db: -43.26 }, at);
        assert_eq!(level.to_json(), r#"{"type":"level","db":-43.3}"#);
        let hello = DeviceMessage::hello(Some(ActiveAlert { since: at, level_db: -20.0 }), true);
        assert_eq!(
            hello.to_json(),
            r#"{"type":"hello","alert":{"since":1700000000123,"level_db":-20.0},"listen_only":true}"#
        );
        assert_eq!(DeviceMessage::hello(None, false).to_json(), r#"{"type":"hello","alert":null,"listen_only":false}"#);
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_request(true, br#"{"type":"listen-only","on":true}"#),
            Ok(ViewerRequest::ListenOnly { on: true })
        );
        assert_eq!(
            parse_request(true, br#"{"type":"listen-only","on":false}"#),
            Ok(ViewerRequest::ListenOnly { on: false })
        );
        assert_eq!(parse_request(false, b"\x01\x02"), Err(RequestError::Binary(2)));
        assert_eq!(parse_request(true, &[b' '; 2000]), Err(RequestError::TooLarge(2000)));
        for bad in [
            &b"{"[..],
            br#"{"type":"reboot"}"#,
            br#"{"type":"listen-only"}"#,
            br#"{"type":"listen-only","on":1}"#,
            b"\xff",
        ] {
            assert!(matches!(parse_request(true, bad), Err(RequestError::Malformed(_))), "{bad:?}");
        }
    }
}
