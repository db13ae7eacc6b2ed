//! The room/peer state machine: the core of the device, with no I/O.
//!
//! It takes events (the signaling transport went up or down, the room said
//! something, a peer reported something, time passed) and returns actions for
//! the edges to carry out. Time is passed in, never read, so every scenario is
//! a plain unit test.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::peer::{ConnectionState, IceCandidate, PeerEvent, PeerId, SdpKind};
use crate::signaling::protocol::{self, RoomEvent, SignalData};

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
    /// Sent with `join` on roomcam's own server, which then names us by it
    /// instead of the socket id, so that viewers know us again after a
    /// signaling outage (classic servers ignore it).
    pub member_id: Option<String>,
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
            member_id: None,
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
    /// The peers got new ICE servers (fresh TURN credentials from the
    /// server): a relayed path must move to them before the old ones expire.
    IceServersRenewed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Join {
        room: String,
        token: Option<String>,
        member: Option<String>,
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
    /// `peer` needs an IDR. `new_viewer`: it just connected or video just
    /// started flowing to it (honoured at once); otherwise it lost pictures
    /// (PLI, FIR, fell behind), which the daemon may coalesce.
    RequestKeyframe {
        peer: PeerId,
        new_viewer: bool,
    },
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
    /// We sent an offer and no answer has been applied yet.
    offer_pending: bool,
    /// The DTLS fingerprint of the viewer's last description: the one thing
    /// that tells, on a classic server where ids change with every
    /// reconnection, whether an answer or offer comes from the same browser
    /// peer connection or from a new one.
    remote_fingerprint: Option<String>,
}

impl PeerSlot {
    /// Established and not (yet) failed: a call worth keeping. Its state may
    /// read `Connecting` during an ICE restart.
    fn live(&self) -> bool {
        self.ever_connected && matches!(self.state, ConnectionState::Connected | ConnectionState::Connecting)
    }
}

/// How soon the device offers again to a viewer whose connection failed
/// while it is still in the room: a page whose network came back should not
/// wait for a reload. Doubling from the first delay to the last; given up
/// after `RECOVERY_GIVE_UP` without a connection (the viewer most likely
/// left without a `bye`, as classic servers do).
const RECOVERY_FIRST: Duration = Duration::from_secs(2);
const RECOVERY_MAX: Duration = Duration::from_secs(10);
const RECOVERY_GIVE_UP: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Recovery {
    since: Instant,
    next_at: Instant,
    delay: Duration,
}

pub struct Session {
    settings: SessionSettings,
    room: RoomState,
    peers: HashMap<PeerId, PeerSlot>,
    /// Set once the server relays with `from`: roomcam's own server, several
    /// viewers possible, `bye` on disconnect. Otherwise: a classic 2-member room.
    server_names_senders: bool,
    viewers_reported: usize,
    /// Viewers believed to be in the room (joined, or spoke, and no `bye`
    /// since): the ones a failed connection is recovered for.
    present: HashSet<PeerId>,
    recovering: HashMap<PeerId, Recovery>,
    /// When we joined again with live connections kept: on a classic server
    /// the next newcomer is then likely our viewer back with a new socket id.
    rejoined_with_live_peers: Option<Instant>,
}

/// How long after such a rejoin a classic newcomer is taken for our viewer
/// coming back (both sides reconnect after a server restart within seconds).
const REJOIN_WINDOW: Duration = Duration::from_secs(30);

impl Session {
    pub fn new(settings: SessionSettings) -> Self {
        Session {
            settings,
            room: RoomState::Offline,
            peers: HashMap::new(),
            server_names_senders: false,
            viewers_reported: 0,
            present: HashSet::new(),
            recovering: HashMap::new(),
            rejoined_with_live_peers: None,
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
                    self.fail_peer(&peer, now, &mut actions);
                }
            }
            Event::Tick => self.on_tick(now, &mut actions),
            Event::IceServersRenewed => self.restart_ice_on_live_offers(&mut actions),
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
        actions.push(Action::Join {
            room: self.settings.room.clone(),
            token: self.settings.token.clone(),
            member: self.settings.member_id.clone(),
        });
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
            | RoomEvent::Left { room }
            | RoomEvent::DeviceOffline { room, .. }
            | RoomEvent::DeviceOnline { room } => room,
        };
        if *event_room != room {
            warn!(room:% = room; "room {room}: ignoring an event for room {event_room:?}");
            return;
        }
        match event {
            RoomEvent::Joined { id, .. } => {
                // A (re)join after a signaling outage: media flows peer to
                // peer and never needed the server, so connections that are
                // established stay; only negotiations cut short are dropped.
                let (kept, cut): (Vec<PeerId>, Vec<PeerId>) =
                    self.peer_ids().into_iter().partition(|p| self.peers[p].ever_connected);
                for peer in cut {
                    self.close_peer(&peer, actions);
                }
                self.present.retain(|p| kept.contains(p));
                self.recovering.clear();
                self.rejoined_with_live_peers = (!kept.is_empty()).then_some(now);
                // Nothing to ask whoever is in the room already: our viewer
                // needs nothing, and a new one has no connection and offers
                // when it hears we joined. (An ICE restart now would stop
                // the media until answered: webrtc-rs drops the old pair at once.)
                if kept.is_empty() {
                    info!(room:% = room; "room {room}: joined as {id}, waiting for a viewer");
                } else {
                    info!(
                        room:% = room;
                        "room {room}: joined as {id}, keeping {} live connection(s) across the signaling outage",
                        kept.len()
                    );
                }
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
            // For viewers: the server says so of this device, which is here.
            RoomEvent::DeviceOffline { .. } | RoomEvent::DeviceOnline { .. } => {}
            RoomEvent::OtherJoined { id, .. } => {
                self.present.insert(id.clone());
                self.recovering.remove(&id);
                if self.server_names_senders && self.peers.get(&id).is_some_and(PeerSlot::live) {
                    // roomcam's server names members by their stable member
                    // id: this is our viewer, back after a signaling outage.
                    info!(room:% = room, peer:% = id; "room {room} peer {id}: back in the room; keeping its live connection");
                    return;
                }
                // Without an outage of our own, a classic newcomer is a new
                // viewer (ours left without a word): it gets a new connection.
                let after_outage =
                    self.rejoined_with_live_peers.take().is_some_and(|t| now.duration_since(t) < REJOIN_WINDOW);
                if !self.server_names_senders
                    && after_outage
                    && self.peers.len() == 1
                    && let Some((live, slot)) = self.peers.iter_mut().next()
                    && slot.live()
                {
                    if slot.role == Role::Answerer {
                        // The viewer offered first: it asks, we answer on the live connection.
                        info!(room:% = room, peer:% = live; "room {room} peer {live}: {id} joined; keeping the live connection");
                        return;
                    }
                    // A classic room names members by socket id, new with
                    // every reconnection: the newcomer may be our viewer back
                    // or a new one. A new offer on the live connection asks;
                    // the answer's DTLS fingerprint tells (see on_message).
                    // Not an ICE restart: webrtc-rs drops the working
                    // candidate pair on one, freezing the picture until the
                    // new checks pass, and the path has not changed.
                    let live = live.clone();
                    info!(
                        room:% = room, peer:% = live;
                        "room {room} peer {live}: {id} joined; checking with a new offer whether it is this viewer back"
                    );
                    slot.offer_pending = true;
                    self.present.remove(&id);
                    self.present.insert(live.clone());
                    actions.push(Action::CreateOffer { peer: live, ice_restart: false });
                    return;
                }
                let stale: Vec<PeerId> = if self.server_names_senders {
                    self.peers.keys().filter(|p| **p == id).cloned().collect()
                } else {
                    // A classic room holds two: a newcomer means the old viewer is gone.
                    self.peer_ids()
                };
                for peer in stale {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: replaced by newcomer {id}");
                    if peer != id {
                        self.present.remove(&peer);
                        self.recovering.remove(&peer);
                    }
                    self.close_peer(&peer, actions);
                }
                info!(room:% = room, peer:% = id; "room {room} peer {id}: viewer joined, offering");
                self.offer_to(&id, now, actions);
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
                self.present.remove(&id);
                self.recovering.remove(&id);
                match peer {
                    Some(peer) => {
                        info!(room:% = room, peer:% = peer; "room {room} peer {peer}: left the room (bye)");
                        self.present.remove(&peer);
                        self.recovering.remove(&peer);
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
        self.present.insert(peer.clone());
        match data {
            SignalData::Description { kind: SdpKind::Offer, sdp } => {
                let replace = self.peers.get(&peer).and_then(|slot| {
                    if slot.role == Role::Offerer && slot.offer_pending && !slot.ever_connected {
                        // Both sides offered at once (both recovering): the
                        // device is the polite one and takes the viewer's offer.
                        Some("its offer crossed ours; taking its offer")
                    } else if changed_fingerprint(slot, &sdp) {
                        Some("offer from a new browser connection (its DTLS fingerprint changed)")
                    } else {
                        None
                    }
                });
                if let Some(why) = replace {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: {why}; new peer connection");
                    self.close_peer(&peer, actions);
                }
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
                Some(slot) if slot.role == Role::Offerer && changed_fingerprint(slot, &sdp) => {
                    // Our offer reached a different browser connection
                    // than the one we stream to (classic room: a new viewer,
                    // or the same tab with a new RTCPeerConnection).
                    info!(
                        room:% = room, peer:% = peer;
                        "room {room} peer {peer}: answered by a new browser connection (DTLS fingerprint changed); offering afresh"
                    );
                    self.close_peer(&peer, actions);
                    self.offer_to(&peer, now, actions);
                }
                Some(slot) if slot.role == Role::Offerer => {
                    info!(room:% = room, peer:% = peer; "room {room} peer {peer}: answer received");
                    if let Some(slot) = self.peers.get_mut(&peer) {
                        slot.offer_pending = false;
                    }
                    self.apply_remote(&peer, SdpKind::Answer, sdp, actions);
                }
                Some(_) => {
                    warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: unexpected answer (we did not offer); dropped")
                }
                None => warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: answer for no peer; dropped"),
            },
            SignalData::Bye => {
                info!(room:% = room, peer:% = peer; "room {room} peer {peer}: said bye");
                self.present.remove(&peer);
                self.recovering.remove(&peer);
                self.close_peer(&peer, actions);
            }
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
        let fingerprint = dtls_fingerprint(&sdp);
        actions.push(Action::SetRemoteDescription { peer: peer.clone(), kind, sdp });
        if let Some(slot) = self.peers.get_mut(peer) {
            slot.has_remote_description = true;
            if fingerprint.is_some() {
                slot.remote_fingerprint = fingerprint;
            }
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
            PeerEvent::KeyframeRequested { peer, new_viewer } => {
                if self.peers.contains_key(&peer) {
                    actions.push(Action::RequestKeyframe { peer, new_viewer });
                }
            }
            // The rate policy (src/rate) consumes these, not the room state machine.
            PeerEvent::BandwidthEstimate { .. }
            | PeerEvent::VideoRefused { .. }
            | PeerEvent::ListenOnly { .. }
            | PeerEvent::VideoCeiling { .. }
            | PeerEvent::Measured { .. } => {}
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
                        if self.recovering.remove(&peer).is_some() {
                            info!(room:% = room, peer:% = peer; "room {room} peer {peer}: connection recovered");
                        }
                        actions.push(Action::RequestKeyframe { peer: peer.clone(), new_viewer: true });
                    }
                    ConnectionState::Disconnected => {
                        slot.disconnected_since = Some(now);
                        if slot.role == Role::Offerer && !slot.ice_restart_sent {
                            slot.ice_restart_sent = true;
                            slot.offer_pending = true;
                            info!(room:% = room, peer:% = peer; "room {room} peer {peer}: trying an ICE restart");
                            actions.push(Action::CreateOffer { peer: peer.clone(), ice_restart: true });
                        }
                    }
                    ConnectionState::Failed => {
                        warn!(room:% = room, peer:% = peer; "room {room} peer {peer}: connection failed; closing it");
                        self.fail_peer(&peer, now, actions);
                    }
                    ConnectionState::Closed => {
                        self.peers.remove(&peer);
                    }
                    ConnectionState::New | ConnectionState::Connecting => {}
                }
            }
        }
    }

    /// An ICE restart gathers again, with the new servers, on every live
    /// connection we offered. The viewer's side restarts those it offered:
    /// the answerer never offers on a live connection (see on_room_event).
    fn restart_ice_on_live_offers(&mut self, actions: &mut Vec<Action>) {
        let room = &self.settings.room;
        let mut restarts: Vec<&PeerId> = Vec::new();
        for (peer, slot) in self.peers.iter_mut() {
            if slot.role == Role::Offerer && slot.live() && !slot.offer_pending {
                slot.offer_pending = true;
                info!(room:% = room, peer:% = peer; "room {room} peer {peer}: ICE restart with the new TURN credentials");
                restarts.push(peer);
            }
        }
        restarts.sort();
        actions.extend(restarts.into_iter().map(|peer| Action::CreateOffer { peer: peer.clone(), ice_restart: true }));
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
            self.fail_peer(&id, now, actions);
        }
        if matches!(self.room, RoomState::InRoom { .. }) {
            self.recover_due(now, actions);
        }
    }

    /// Offers again to viewers whose connection failed while they are still
    /// in the room, when their turn has come.
    fn recover_due(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let room = self.settings.room.clone();
        let due: Vec<PeerId> = self
            .recovering
            .iter()
            .filter(|(id, r)| now >= r.next_at && !self.peers.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(recovery) = self.recovering.get_mut(&id) else { continue };
            if now.duration_since(recovery.since) >= RECOVERY_GIVE_UP {
                warn!(
                    room:% = room, peer:% = id;
                    "room {room} peer {id}: not recovered in {}s; waiting for it to join again", RECOVERY_GIVE_UP.as_secs()
                );
                self.recovering.remove(&id);
                self.present.remove(&id);
                continue;
            }
            // Should this attempt fail too, the next waits twice as long.
            recovery.next_at = now + recovery.delay;
            recovery.delay = (recovery.delay * 2).min(RECOVERY_MAX);
            info!(room:% = room, peer:% = id; "room {room} peer {id}: still in the room; offering a new connection");
            self.offer_to(&id, now, actions);
        }
    }

    fn offer_to(&mut self, id: &PeerId, now: Instant, actions: &mut Vec<Action>) {
        self.add_peer(id, Role::Offerer, from_is_named(id), now);
        if let Some(slot) = self.peers.get_mut(id) {
            slot.offer_pending = true;
        }
        actions.push(Action::CreatePeer { peer: id.clone() });
        actions.push(Action::CreateOffer { peer: id.clone(), ice_restart: false });
    }

    /// Closes a peer whose connection failed; if its viewer is still in the
    /// room, a new connection will be offered (see `recover_due`).
    fn fail_peer(&mut self, id: &PeerId, now: Instant, actions: &mut Vec<Action>) {
        self.close_peer(id, actions);
        if protocol::is_whep_member(id) {
            // A WHEP viewer cannot be offered to (it only ever POSTs an
            // offer): its session is over, and the server is told to end it.
            self.present.remove(id);
            actions.push(Action::Send { data: SignalData::Bye, to: Some(id.clone()) });
            return;
        }
        if self.present.contains(id) {
            let recovery = self.recovering.entry(id.clone()).or_insert_with(|| Recovery {
                since: now,
                next_at: now + RECOVERY_FIRST,
                delay: RECOVERY_FIRST * 2,
            });
            recovery.next_at = recovery.next_at.max(now + RECOVERY_FIRST);
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
                offer_pending: false,
                remote_fingerprint: None,
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

/// The `a=fingerprint:` of a description (session or first media level:
/// browsers use one certificate per peer connection).
pub fn dtls_fingerprint(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=fingerprint:")).map(|f| f.trim().to_ascii_lowercase())
}

fn changed_fingerprint(slot: &PeerSlot, sdp: &str) -> bool {
    match (&slot.remote_fingerprint, dtls_fingerprint(sdp)) {
        (Some(old), Some(new)) => *old != new,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
