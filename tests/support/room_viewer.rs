//! A viewer in a room: roomcam's socket.io client for the room, the
//! programmatic webrtc-rs viewer for the media, and the glue between them.
//! Include next to `common` and `viewer`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcam::config::ProtocolChoice;
use roomcam::signaling::client::{ClientCommand, ClientEvent};
use roomcam::signaling::protocol::{RoomEvent, SignalData, message_event};

use crate::common::Member;
use crate::viewer::{self, Viewer, ViewerOptions, ViewerSignal};

/// A viewer in a room: its socket.io membership and its peer, glued together.
pub struct RoomViewer {
    pub viewer: Arc<Viewer>,
    member_commands: tokio::sync::mpsc::UnboundedSender<ClientCommand>,
    pump: tokio::task::JoinHandle<()>,
    room: String,
}

impl RoomViewer {
    /// Joins `room`; offers if the device is already there (`otherjoin`
    /// comes to the device, so the device offers), else waits and offers
    /// when the device arrives, like the classic browser client.
    pub async fn join(url: &str, room: &str, options: ViewerOptions) -> RoomViewer {
        Self::join_waiting(url, room, options, None).await
    }

    /// As `join`, waiting up to `wait` for the server's answers (see `Member::connect_waiting`).
    pub async fn join_waiting(url: &str, room: &str, options: ViewerOptions, wait: Option<Duration>) -> RoomViewer {
        let mut member = Member::connect_waiting(url, ProtocolChoice::Auto, wait);
        member.expect_connected().await;
        member.join(room).await;
        let (viewer, mut signals) = Viewer::new(options).await.expect("viewer");
        let viewer = Arc::new(viewer);
        let commands = member.commands.clone();
        let room_name = room.to_owned();
        let peer = viewer.clone();
        let pump = tokio::spawn(async move {
            // The device, once known. In a room of several viewers (roomcam's
            // own server) the others' `otherjoin` and messages are not ours,
            // and ours go to the device alone (`from`/`to`; classic servers
            // send no `from`, and there the room holds only the two of us).
            let mut device: Option<String> = None;
            let mut addressable = false;
            loop {
                tokio::select! {
                    Some(event) = member.events.recv() => match event {
                        ClientEvent::Room(RoomEvent::OtherJoined { id, .. }) if device.is_none() => {
                            device = Some(id);
                            peer.create_offer().await.expect("viewer offer");
                        }
                        ClientEvent::Room(RoomEvent::Message { from: Some(from), .. })
                            if device.as_ref().is_some_and(|d| *d != from) => {}
                        ClientEvent::Room(RoomEvent::Message { data, from, .. }) => {
                            if let Some(from) = from {
                                device = Some(from);
                                addressable = true;
                            }
                            match data {
                            SignalData::Description { kind, sdp } => {
                                if let Err(e) = peer.set_remote_description(kind, sdp).await {
                                    eprintln!("viewer: remote description rejected: {e}");
                                }
                            }
                            SignalData::Candidate(c) => {
                                let _ = peer.add_candidate(c).await;
                            }
                            SignalData::Bye => {}
                            }
                        }
                        _ => {}
                    },
                    Some(signal) = signals.recv() => {
                        let data = match signal {
                            ViewerSignal::Description { kind, sdp } => SignalData::Description { kind, sdp },
                            ViewerSignal::Candidate(c) => SignalData::Candidate(c),
                        };
                        let to = device.as_deref().filter(|_| addressable);
                        let (name, args) = message_event(&room_name, &data, to);
                        member.emit(name, args);
                    }
                    else => break,
                }
            }
        });
        RoomViewer { viewer, member_commands: commands, pump, room: room.to_owned() }
    }

    pub async fn wait_frames(&self, n: u64, timeout: Duration) -> viewer::ViewerStats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.viewer.stats();
            if stats.frames_decoded >= n {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "viewer in {} decoded {} frames, wanted {n} within {timeout:?}: {stats:?}",
                self.room,
                stats.frames_decoded
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Leaves with `leave` (the server tells the device `bye`).
    pub async fn leave(self) {
        let (name, args) = roomcam::signaling::protocol::leave_event(&self.room);
        let _ = self.member_commands.send(ClientCommand::Emit { name: name.into(), args });
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.vanish().await;
    }

    /// Disappears without a word, like a closed tab on a classic server.
    pub async fn vanish(self) {
        let _ = self.member_commands.send(ClientCommand::Close);
        self.pump.abort();
        self.viewer.close().await;
    }
}
