//! A socket.io room member driven by roomcam's own client, for the tests
//! (through tests/common) and the emulated board's viewer. Include with
//! `#[path = "support/member.rs"] mod member;`.
#![allow(dead_code)]

use std::time::Duration;

use roomcam::config::ProtocolChoice;
use roomcam::signaling::client::{self, ClientCommand, ClientEvent, ClientSettings};
use roomcam::signaling::protocol::RoomEvent;
use serde_json::Value;
use tokio::sync::mpsc;

/// A socket.io room member driven by roomcam's own client.
pub struct Member {
    pub events: mpsc::UnboundedReceiver<ClientEvent>,
    pub commands: mpsc::UnboundedSender<ClientCommand>,
    task: tokio::task::JoinHandle<()>,
    /// How long `expect_connected` and `expect_room` wait; `None`: 15 s for
    /// the connection, 10 s for a room event.
    wait: Option<Duration>,
}

impl Member {
    pub fn connect(server: &str, protocol: ProtocolChoice) -> Member {
        Self::connect_waiting(server, protocol, None)
    }

    /// As `connect`, waiting up to `wait` for the connection and for each
    /// room event (an emulated board is many times slower than the host).
    pub fn connect_waiting(server: &str, protocol: ProtocolChoice, wait: Option<Duration>) -> Member {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let settings = ClientSettings { server: server.to_owned(), protocol, extra_ca: None };
        let task = tokio::spawn(client::run(settings, events_tx, commands_rx));
        Member { events, commands, task, wait }
    }

    pub fn emit(&self, name: &str, args: Vec<Value>) {
        self.commands.send(ClientCommand::Emit { name: name.into(), args }).expect("client alive");
    }

    /// Next event that `pred` accepts; others are skipped. Panics on timeout.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pred(&event) {
                        return found;
                    }
                }
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("no {what} within {timeout:?}"),
            }
        }
    }

    pub async fn expect_connected(&mut self) -> roomcam::signaling::codec::EngineIoVersion {
        let timeout = self.wait.unwrap_or(Duration::from_secs(15));
        self.expect("connection", timeout, |e| match e {
            ClientEvent::Connected { version } => Some(*version),
            _ => None,
        })
        .await
    }

    pub async fn expect_room(&mut self, what: &str, mut pred: impl FnMut(&RoomEvent) -> bool) -> RoomEvent {
        let timeout = self.wait.unwrap_or(Duration::from_secs(10));
        self.expect(what, timeout, |e| match e {
            ClientEvent::Room(r) if pred(r) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Asserts that nothing matching `pred` arrives within `within`.
    pub async fn expect_no_room(&mut self, what: &str, within: Duration, mut pred: impl FnMut(&RoomEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let ClientEvent::Room(r) = &event {
                assert!(!pred(r), "unexpected {what}: {r:?}");
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> String {
        self.emit("join", vec![room.into()]);
        let answer = self
            .expect_room("an answer to join", |r| {
                matches!(r, RoomEvent::Joined { .. } | RoomEvent::Full { .. } | RoomEvent::Unauthorized { .. })
            })
            .await;
        match answer {
            RoomEvent::Joined { id, .. } => id,
            refused => panic!("join {room:?} refused: {refused:?}"),
        }
    }

    pub fn close(self) {
        let _ = self.commands.send(ClientCommand::Close);
        drop(self.task);
    }
}
