//! The room/peer state machine: the core of the device, with no I/O.
//!
//! It takes events (the signaling transport went up or down, the room said
//! something, a peer reported something, time passed) and returns actions for
//! the edges to carry out. Time is passed in, never read, so every scenario is
//! a plain unit test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::peer::{ConnectionState, IceCandidate, PeerEvent, PeerId, SdpKind};
use crate::signaling::protocol::{RoomEvent, SignalData};

/// In a classic room the device learns nobody's id when it joins second; the
/// viewer that then offers is known by this name until it says otherwise.
pub const UNNAMED_VIEWER: &str = "viewer";

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub room: String,
    pub token: Option<String>,
    /// How long a peer may stay `disconnected` before it is closed.
    pub disconnect_timeout: Duration,
    /// How long a new peer may take to connect at all.
    pub connect_timeout: Duration,
    /// When the room was full, try again after this long.
    pub full_retry: Duration,
    /// When our token was refused, try again after this long (the secret may
    /// be fixed on the server side without touching the device).
    pub unauthorized_retry: Duration,
}

impl SessionSettings {
    pub fn new(room: impl Into<String>) -> Self {
        SessionSettings {
            room: room.into(),
            token: None,
            disconnect_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            full_retry: Duration::from_secs(10),
            unauthorized_retry: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    SignalingConnected,
    SignalingDisconnected,
    Room(RoomEvent),
    Peer(PeerEvent),
    /// A peer operation (SDP, candidate) failed: the peer is unusable.
    PeerFailed {
        peer: PeerId,
        reason: String,
    },
    Tick,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Join {
        room: String,
        token: Option<String>,
    },
    Leave {
        room: String,
    },
    Send {
        data: SignalData,
        to: Option<PeerId>,
    },
    CreatePeer {
        peer: PeerId,
    },
    CreateOffer {
        peer: PeerId,
        ice_restart: bool,
    },
    SetRemoteDescription {
        peer: PeerId,
        kind: SdpKind,
        sdp: String,
    },
    AddRemoteCandidate {
        peer: PeerId,
        candidate: IceCandidate,
    },
    ClosePeer {
        peer: PeerId,
    },
    /// Number of viewers whose media flows; the encoders run only while > 0.
    SetViewers(usize),
    RequestKeyframe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomState {
    /// No signaling connection.
    Offline,
    /// `join` sent, no answer yet.
    Joining,
    InRoom {
        my_id: String,
    },
    /// Refused (room full, bad token): join again at `retry_at`.
    Refused {
        retry_at: Instant,
    },
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Offerer,
    Answerer,
}

#[derive(Debug)]
struct PeerSlot {
    role: Role,
    created_at: Instant,
    state: ConnectionState,
    disconnected_since: Option<Instant>,
    ever_connected: bool,
    ice_restart_sent: bool,
    /// Until a remote description is set, candidates wait here.
    has_remote_description: bool,
    pending_candidates: Vec<IceCandidate>,
    /// Whether the server addresses this viewer by id (it sent `from` or `otherjoin`).
    addressable: bool,
}

pub struct Session {
    settings: SessionSettings,
    room: RoomState,
    peers: HashMap<PeerId, PeerSlot>,
    /// Set once the server relays with `from`: roomcam's own server, several
    /// viewers possible, `bye` on disconnect. Otherwise: a classic 2-member room.
    server_names_senders: bool,
    viewers_reported: usize,
}

impl Session {
    pub fn new(settings: SessionSettings) -> Self {
        Session {
            settings,
            room: RoomState::Offline,
            peers: HashMap::new(),
            server_names_senders: false,
            viewers_reported: 0,
        }
    }

    pub fn room_state(&self) -> &RoomState {
        &self.room
    }

    pub fn peer_ids(&self) -> Vec<PeerId> {
        let mut ids: Vec<_> = self.peers.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn connected_viewers(&self) -> usize {
        self.peers.values().filter(|p| p.state == ConnectionState::Connected).count()
    }

    pub fn room(&self) -> &str {
        &self.settings.room
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.room == RoomState::Stopped {
            return actions;
        }
        match event {
            Event::SignalingConnected => {
                info!(room:% = self.settings.room; "room {}: signaling connected, joining", self.settings.room);
                self.join(&mut actions);
            }
            Event::SignalingDisconnected => {
                // Peers keep streaming peer to peer; the room is rebuilt on rejoin.
                if self.room != RoomState::Offline {
                    warn!(room:% = self.settings.room; "room {}: signaling connection lost", self.settings.room);
                }
                self.room = RoomState::Offline;
            }
            Event::Room(room_event) => self.on_room_event(room_event, now, &mut actions),
            Event::Peer(peer_event) => self.on_peer_event(peer_event, now, &mut actions),
            Event::PeerFailed { peer, reason } => {
                if self.peers.contains_key(&peer) {
                    warn!(room:% = self.settings.room; "room {} peer {peer}: {reason}; closing it", self.settings.room);
                    self.close_peer(&peer, &mut actions);
                }
            }
            Event::Tick => self.on_tick(now, &mut actions),
            Event::Shutdown => {
                let ids = self.peer_ids();
                for id in ids {
                    self.close_peer(&id, &mut actions);
                }
                if matches!(self.room, RoomState::InRoom { .. } | RoomState::Joining) {
                    actions.push(Action::Leave { room: self.settings.room.clone() });
                }
                info!(room:% = self.settings.room; "room {}: shutting down", self.settings.room);
                self.room = RoomState::Stopped;
            }
        }
        self.report_viewers(&mut actions);
        actions
    }

    fn join(&mut self, actions: &mut Vec<Action>) {
        self.room = RoomState::Joining;
        actions.push(Action::Join { room: self.settings.room.clone(), token: self.settings.token.clone() });
    }

    fn on_room_event(&mut self, event: RoomEvent, now: Instant, actions: &mut Vec<Action>) {
        let room = self.settings.room.clone();
        let event_room = match &event {
            RoomEvent::Joined { room, .. }
            | RoomEvent::OtherJoined { room, .. }
            | RoomEvent::Full { room }
            | RoomEvent::Unauthorized { room }
            | RoomEvent::Message { room, .. }
            | RoomEvent::Bye { room, .. }
            | RoomEvent::Left { room } => room,
        };
        if *event_room != room {
            warn!(room:% = room; "room {room}: ignoring an event for room {event_room:?}");
            return;
        }
        match event {
            RoomEvent::Joined { id, .. } => {
                // Whoever we streamed to before this (re)join belongs to a
                // room state that no longer exists.
                for peer in self.peer_ids() {
                    self.close_peer(&peer, actions);
                }
                info!(room:% = room; "room {room}: joined as {id}, waiting for a viewer");
                self.room = RoomState::InRoom { my_id: id };
            }
            RoomEvent::Full { .. } => {
                let retry = self.settings.full_retry;
                warn!(room:% = room; "room {room}: room is full (2 members already); trying again in {}s", retry.as_secs());
                self.room = RoomState::Refused { retry_at: now + retry };
            }
            RoomEvent::Unauthorized { .. } => {
                let retry = self.settings.unauthorized_retry;
                warn!(
                    room:% = room;
                    "room {room}: the server refused our token (check `token` in the config); trying again in {}s",
                    retry.as_secs()
                );
                self.room = RoomState::Refused { retry_at: now + retry };
            }
            RoomEvent::Left { .. } => info!(room:% = room; "room {room}: left"),
            RoomEvent::OtherJoined { id, .. } => {
                let stale: Vec<PeerId> = if self.server_names_senders {
                    self.peers.keys().filter(|p| **p == id).cloned().collect()
                } else {
                    // A classic room holds two: a newcomer means the old viewer is gone.
                    self.peer_ids()
                };
                for peer in stale {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: replaced by newcomer {id}");
                    self.close_peer(&peer, actions);
                }
                info!(room:% = room, peer:% = id; "room {room} peer {id}: viewer joined, offering");
                self.add_peer(&id, Role::Offerer, true, now);
                actions.push(Action::CreatePeer { peer: id.clone() });
                actions.push(Action::CreateOffer { peer: id, ice_restart: false });
            }
            RoomEvent::Bye { id, .. } => {
                let peer = if self.peers.contains_key(&id) {
                    Some(id.clone())
                } else if !self.server_names_senders {
                    // Classic room: the only other member is the one that left.
                    self.peers.keys().find(|p| !self.peers[*p].addressable).cloned()
                } else {
                    None
                };
                match peer {
                    Some(peer) => {
                        info!(room:% = room, peer:% = peer; "room {room} peer {peer}: left the room (bye)");
                        self.close_peer(&peer, actions);
                    }
                    None => info!(room:% = room; "room {room}: bye for {id}, who had no peer"),
                }
            }
            RoomEvent::Message { data, from, .. } => self.on_message(data, from, now, actions),
        }
    }

    fn on_message(&mut self, data: SignalData, from: Option<PeerId>, now: Instant, actions: &mut Vec<Action>) {
        let room = self.settings.room.clone();
        if from.is_some() && !self.server_names_senders {
            self.server_names_senders = true;
        }
        let peer = match from {
            Some(id) => id,
            // Classic server: messages come from the one other member.
            None => match self.peers.len() {
                0 => UNNAMED_VIEWER.to_owned(),
                1 => self.peers.keys().next().cloned().unwrap_or_default(),
                _ => {
                    warn!(room:% = room; "room {room}: message without a sender and several peers; dropped");
                    return;
                }
            },
        };
        match data {
            SignalData::Description { kind: SdpKind::Offer, sdp } => {
                if self.peers.contains_key(&peer) {
                    // Renegotiation or ICE restart on a live connection.
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: new offer (renegotiation)");
                } else {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: viewer offered, answering");
                    self.add_peer(&peer, Role::Answerer, from_is_named(&peer), now);
                    actions.push(Action::CreatePeer { peer: peer.clone() });
                }
                self.apply_remote(&peer, SdpKind::Offer, sdp, actions);
            }
            SignalData::Description { kind: SdpKind::Answer, sdp } => match self.peers.get(&peer) {
                Some(slot) if slot.role == Role::Offerer => {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: answer received");
                    self.apply_remote(&peer, SdpKind::Answer, sdp, actions);
                }
                Some(_) => {
                    warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: unexpected answer (we did not offer); dropped")
                }
                None => warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: answer for no peer; dropped"),
            },
            SignalData::Candidate(candidate) => match self.peers.get_mut(&peer) {
                Some(slot) if slot.has_remote_description => {
                    actions.push(Action::AddRemoteCandidate { peer, candidate });
                }
                Some(slot) => slot.pending_candidates.push(candidate),
                None => warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: candidate for no peer; dropped"),
            },
        }
    }

    fn apply_remote(&mut self, peer: &PeerId, kind: SdpKind, sdp: String, actions: &mut Vec<Action>) {
        actions.push(Action::SetRemoteDescription { peer: peer.clone(), kind, sdp });
        if let Some(slot) = self.peers.get_mut(peer) {
            slot.has_remote_description = true;
            // The edge runs one peer's actions in order, so these follow the SDP.
            for candidate in slot.pending_candidates.drain(..) {
                actions.push(Action::AddRemoteCandidate { peer: peer.clone(), candidate });
            }
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent, now: Instant, actions: &mut Vec<Action>) {
        let room = self.settings.room.clone();
        match event {
            PeerEvent::LocalDescription { peer, kind, sdp } => {
                if let Some(slot) = self.peers.get(&peer) {
                    let to = slot.addressable.then(|| peer.clone());
                    actions.push(Action::Send { data: SignalData::Description { kind, sdp }, to });
                }
            }
            PeerEvent::LocalCandidate { peer, candidate } => {
                if let Some(slot) = self.peers.get(&peer) {
                    let to = slot.addressable.then(|| peer.clone());
                    actions.push(Action::Send { data: SignalData::Candidate(candidate), to });
                }
            }
            PeerEvent::KeyframeRequested { peer } => {
                if self.peers.contains_key(&peer) {
                    actions.push(Action::RequestKeyframe);
                }
            }
            // The rate policy (src/rate) consumes estimates, not the room state machine.
            PeerEvent::BandwidthEstimate { .. } => {}
            PeerEvent::ConnectionState { peer, state } => {
                let Some(slot) = self.peers.get_mut(&peer) else { return };
                if slot.state == state {
                    return;
                }
                info!(room:% = room, peer:% = peer; "room {room} peer {peer}: {:?} -> {:?}", slot.state, state);
                slot.state = state;
                match state {
                    ConnectionState::Connected => {
                        slot.disconnected_since = None;
                        slot.ever_connected = true;
                        slot.ice_restart_sent = false;
                        actions.push(Action::RequestKeyframe);
                    }
                    ConnectionState::Disconnected => {
                        slot.disconnected_since = Some(now);
                        if slot.role == Role::Offerer && !slot.ice_restart_sent {
                            slot.ice_restart_sent = true;
                            info!(room:% = room, peer:% = peer; "room {room} peer {peer}: trying an ICE restart");
                            actions.push(Action::CreateOffer { peer: peer.clone(), ice_restart: true });
                        }
                    }
                    ConnectionState::Failed => {
                        warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: connection failed; closing it");
                        self.close_peer(&peer, actions);
                    }
                    ConnectionState::Closed => {
                        self.peers.remove(&peer);
                    }
                    ConnectionState::New | ConnectionState::Connecting => {}
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let room = self.settings.room.clone();
        if let RoomState::Refused { retry_at } = self.room
            && now >= retry_at
        {
            info!(room:% = room; "room {room}: trying to join again");
            self.join(actions);
        }
        let mut expired = Vec::new();
        for (id, slot) in &self.peers {
            if let Some(since) = slot.disconnected_since
                && now.duration_since(since) >= self.settings.disconnect_timeout
            {
                warn!(
                    room:% = room, peer:% = id;
                    "room {room} peer {id}: disconnected for {}s; closing it",
                    self.settings.disconnect_timeout.as_secs()
                );
                expired.push(id.clone());
            } else if !slot.ever_connected && now.duration_since(slot.created_at) >= self.settings.connect_timeout {
                warn!(
                    room:% = room, peer:% = id;
                    "room {room} peer {id}: not connected after {}s; closing it",
                    self.settings.connect_timeout.as_secs()
                );
                expired.push(id.clone());
            }
        }
        for id in expired {
            self.close_peer(&id, actions);
        }
    }

    fn add_peer(&mut self, id: &str, role: Role, addressable: bool, now: Instant) {
        self.peers.insert(
            id.to_owned(),
            PeerSlot {
                role,
                created_at: now,
                state: ConnectionState::New,
                disconnected_since: None,
                ever_connected: false,
                ice_restart_sent: false,
                has_remote_description: false,
                pending_candidates: Vec::new(),
                addressable,
            },
        );
    }

    fn close_peer(&mut self, id: &str, actions: &mut Vec<Action>) {
        if self.peers.remove(id).is_some() {
            info!(room:% = self.settings.room, peer:% = id; "room {} peer {id}: closed, ready for the next viewer", self.settings.room);
            actions.push(Action::ClosePeer { peer: id.to_owned() });
        }
    }

    fn report_viewers(&mut self, actions: &mut Vec<Action>) {
        let viewers = self.connected_viewers();
        if viewers != self.viewers_reported {
            self.viewers_reported = viewers;
            info!(room:% = self.settings.room; "room {}: {viewers} viewer(s) streaming", self.settings.room);
            actions.push(Action::SetViewers(viewers));
        }
    }
}

fn from_is_named(peer: &str) -> bool {
    peer != UNNAMED_VIEWER
}

#[cfg(test)]
mod tests;
