//! Scripted scenarios for the session core: events in, actions out.

use super::*;
use crate::peer::ConnectionState as S;

const ROOM: &str = "nursery";

struct Script {
    session: Session,
    now: Instant,
}

impl Script {
    fn new() -> Self {
        Script { session: Session::new(SessionSettings::new(ROOM)), now: Instant::now() }
    }

    fn with_token(token: &str) -> Self {
        let mut settings = SessionSettings::new(ROOM);
        settings.token = Some(token.into());
        Script { session: Session::new(settings), now: Instant::now() }
    }

    fn send(&mut self, event: Event) -> Vec<Action> {
        self.session.handle(event, self.now)
    }

    fn room(&mut self, event: RoomEvent) -> Vec<Action> {
        self.send(Event::Room(event))
    }

    fn peer(&mut self, event: PeerEvent) -> Vec<Action> {
        self.send(Event::Peer(event))
    }

    fn state(&mut self, peer: &str, state: S) -> Vec<Action> {
        self.peer(PeerEvent::ConnectionState { peer: peer.into(), state })
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.send(Event::Tick)
    }

    /// Connected to the server and admitted to the room, alone.
    fn in_room() -> Self {
        let mut s = Script::new();
        s.send(Event::SignalingConnected);
        s.room(joined("me"));
        s
    }
}

fn joined(id: &str) -> RoomEvent {
    RoomEvent::Joined { room: ROOM.into(), id: id.into() }
}
fn otherjoin(id: &str) -> RoomEvent {
    RoomEvent::OtherJoined { room: ROOM.into(), id: id.into() }
}
fn bye(id: &str) -> RoomEvent {
    RoomEvent::Bye { room: ROOM.into(), id: id.into() }
}
fn message(data: SignalData, from: Option<&str>) -> RoomEvent {
    RoomEvent::Message { room: ROOM.into(), data, from: from.map(str::to_owned) }
}
fn offer(sdp: &str) -> SignalData {
    SignalData::Description { kind: SdpKind::Offer, sdp: sdp.into() }
}
fn answer(sdp: &str) -> SignalData {
    SignalData::Description { kind: SdpKind::Answer, sdp: sdp.into() }
}
fn candidate(n: u16) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 127.0.0.1 {} typ host", 50000 + n),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    }
}
fn new_viewer_keyframe(peer: &str) -> Action {
    Action::RequestKeyframe { peer: peer.into(), new_viewer: true }
}

fn close(peer: &str) -> Action {
    Action::ClosePeer { peer: peer.into() }
}

#[test]
fn joins_on_connect_with_token() {
    let mut s = Script::with_token("s3cret");
    assert_eq!(
        s.send(Event::SignalingConnected),
        vec![Action::Join { room: ROOM.into(), token: Some("s3cret".into()), member: None }]
    );
    assert_eq!(s.room(joined("me")), vec![]);
    assert_eq!(s.session.room_state(), &RoomState::InRoom { my_id: "me".into() });
}

#[test]
fn device_offers_when_a_viewer_joins() {
    let mut s = Script::in_room();
    assert_eq!(
        s.room(otherjoin("v1")),
        vec![Action::CreatePeer { peer: "v1".into() }, Action::CreateOffer { peer: "v1".into(), ice_restart: false }]
    );
    // Our offer and candidates go to that viewer.
    assert_eq!(
        s.peer(PeerEvent::LocalDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: "o".into() }),
        vec![Action::Send { data: offer("o"), to: Some("v1".into()) }]
    );
    assert_eq!(
        s.peer(PeerEvent::LocalCandidate { peer: "v1".into(), candidate: candidate(1) }),
        vec![Action::Send { data: SignalData::Candidate(candidate(1)), to: Some("v1".into()) }]
    );
    // A classic server relays the answer without a sender.
    assert_eq!(
        s.room(message(answer("a"), None)),
        vec![Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Answer, sdp: "a".into() }]
    );
    assert_eq!(
        s.room(message(SignalData::Candidate(candidate(2)), None)),
        vec![Action::AddRemoteCandidate { peer: "v1".into(), candidate: candidate(2) }]
    );
    assert_eq!(s.state("v1", S::Connecting), vec![]);
    assert_eq!(s.state("v1", S::Connected), vec![new_viewer_keyframe("v1"), Action::SetViewers(1)]);
    assert_eq!(s.session.connected_viewers(), 1);
}

#[test]
fn device_answers_when_the_viewer_was_there_first() {
    let mut s = Script::in_room();
    // Classic server: the device never learns the viewer's id.
    let actions = s.room(message(offer("o"), None));
    assert_eq!(
        actions,
        vec![
            Action::CreatePeer { peer: UNNAMED_VIEWER.into() },
            Action::SetRemoteDescription { peer: UNNAMED_VIEWER.into(), kind: SdpKind::Offer, sdp: "o".into() }
        ]
    );
    assert_eq!(
        s.peer(PeerEvent::LocalDescription { peer: UNNAMED_VIEWER.into(), kind: SdpKind::Answer, sdp: "a".into() }),
        vec![Action::Send { data: answer("a"), to: None }]
    );
    // The viewer leaves: classic `bye` carries its id, which we never saw.
    assert_eq!(s.room(bye("abcd")), vec![close(UNNAMED_VIEWER)]);
    assert!(s.session.peer_ids().is_empty());
}

#[test]
fn candidates_before_the_remote_description_are_queued_not_lost() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    // The viewer trickles before its answer arrives (reordered by a relay).
    assert_eq!(s.room(message(SignalData::Candidate(candidate(1)), Some("v1"))), vec![]);
    assert_eq!(s.room(message(SignalData::Candidate(candidate(2)), Some("v1"))), vec![]);
    assert_eq!(
        s.room(message(answer("a"), Some("v1"))),
        vec![
            Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Answer, sdp: "a".into() },
            Action::AddRemoteCandidate { peer: "v1".into(), candidate: candidate(1) },
            Action::AddRemoteCandidate { peer: "v1".into(), candidate: candidate(2) },
        ]
    );
}

#[test]
fn bye_closes_the_peer_and_the_next_viewer_gets_a_new_one() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.state("v1", S::Connected);
    assert_eq!(s.room(bye("v1")), vec![close("v1"), Action::SetViewers(0)]);
    assert_eq!(
        s.room(otherjoin("v2")),
        vec![Action::CreatePeer { peer: "v2".into() }, Action::CreateOffer { peer: "v2".into(), ice_restart: false }]
    );
    assert_eq!(s.session.peer_ids(), vec!["v2".to_string()]);
}

#[test]
fn otherjoin_replaces_a_peer_that_never_connected_in_a_classic_room() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    // The tab was closed before it connected (classic servers send no bye) and reopened.
    let actions = s.room(otherjoin("v2"));
    assert_eq!(
        actions,
        vec![
            close("v1"),
            Action::CreatePeer { peer: "v2".into() },
            Action::CreateOffer { peer: "v2".into(), ice_restart: false }
        ]
    );
    assert_eq!(s.session.peer_ids(), vec!["v2".to_string()]);
}

fn sdp_with(fingerprint: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 {fingerprint}\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n"
    )
}

/// Classic room, the device offered to v1 and streams to it.
fn classic_streaming_to_v1() -> Script {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.peer(PeerEvent::LocalDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: "o1".into() });
    s.room(message(answer(&sdp_with("AA:01")), None));
    s.state("v1", S::Connected);
    s
}

#[test]
fn a_classic_newcomer_is_asked_with_a_new_offer_and_known_again_by_its_fingerprint() {
    // The server restarted: both sides reconnected with new socket ids.
    let mut s = classic_streaming_to_v1();
    s.send(Event::SignalingDisconnected);
    s.send(Event::SignalingConnected);
    assert_eq!(s.room(joined("me2")), vec![], "the live connection is kept");
    assert_eq!(s.room(otherjoin("v1-new-socket")), vec![Action::CreateOffer { peer: "v1".into(), ice_restart: false }]);
    // The same browser connection answers: same fingerprint, same peer, no new connection.
    let same = sdp_with("AA:01");
    assert_eq!(
        s.room(message(answer(&same), None)),
        vec![Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Answer, sdp: same }]
    );
    assert_eq!(s.session.connected_viewers(), 1);
}

#[test]
fn a_classic_newcomer_without_an_outage_of_ours_is_a_new_viewer() {
    // Our viewer's tab closed (no bye on classic servers) and another came.
    let mut s = classic_streaming_to_v1();
    assert_eq!(
        s.room(otherjoin("v2")),
        vec![
            close("v1"),
            Action::CreatePeer { peer: "v2".into() },
            Action::CreateOffer { peer: "v2".into(), ice_restart: false },
            Action::SetViewers(0),
        ]
    );
}

#[test]
fn a_classic_newcomer_after_an_outage_that_is_another_browser_gets_a_new_connection() {
    let mut s = classic_streaming_to_v1();
    s.send(Event::SignalingDisconnected);
    s.send(Event::SignalingConnected);
    s.room(joined("me2"));
    assert_eq!(s.room(otherjoin("v2")), vec![Action::CreateOffer { peer: "v1".into(), ice_restart: false }]);
    // A new tab answered our offer: its certificate differs.
    assert_eq!(
        s.room(message(answer(&sdp_with("BB:02")), None)),
        vec![
            close("v1"),
            Action::CreatePeer { peer: "v1".into() },
            Action::CreateOffer { peer: "v1".into(), ice_restart: false },
            Action::SetViewers(0),
        ]
    );
}

#[test]
fn in_a_classic_room_the_side_that_answered_first_waits_to_be_asked() {
    // The viewer offered first: after a server restart it asks (an ICE
    // restart offer on the live connection); the device must not offer on
    // it, or the DTLS roles would swap, which Chrome refuses.
    let mut s = Script::in_room();
    s.room(message(offer(&sdp_with("AA:01")), None));
    s.state(UNNAMED_VIEWER, S::Connected);
    s.send(Event::SignalingDisconnected);
    s.send(Event::SignalingConnected);
    assert_eq!(s.room(joined("me2")), vec![]);
    assert_eq!(s.room(otherjoin("v-new-socket")), vec![]);
    let restart = sdp_with("AA:01");
    assert_eq!(
        s.room(message(offer(&restart), None)),
        vec![Action::SetRemoteDescription { peer: UNNAMED_VIEWER.into(), kind: SdpKind::Offer, sdp: restart }]
    );
}

#[test]
fn an_offer_from_a_new_browser_connection_replaces_the_live_peer() {
    let mut s = Script::in_room();
    s.room(message(offer(&sdp_with("AA:01")), Some("v1")));
    s.state("v1", S::Connected);
    let fresh = sdp_with("CC:03");
    assert_eq!(
        s.room(message(offer(&fresh), Some("v1"))),
        vec![
            close("v1"),
            Action::CreatePeer { peer: "v1".into() },
            Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: fresh },
            Action::SetViewers(0),
        ]
    );
}

#[test]
fn reconnect_keeps_live_peers_and_drops_cut_negotiations() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    s.room(message(offer("o2"), Some("v2")));
    assert_eq!(s.send(Event::SignalingDisconnected), vec![]);
    assert_eq!(s.session.room_state(), &RoomState::Offline);
    assert_eq!(s.session.connected_viewers(), 1, "media does not need the server");
    assert_eq!(s.send(Event::SignalingConnected), vec![Action::Join { room: ROOM.into(), token: None, member: None }]);
    assert_eq!(s.room(joined("me2")), vec![close("v2")], "v1 streams on, v2 was mid-negotiation");
    // roomcam's server names v1 by its member id: it is back, nothing to do.
    assert_eq!(s.room(otherjoin("v1")), vec![]);
    assert_eq!(s.session.peer_ids(), vec!["v1".to_string()]);
}

#[test]
fn the_member_id_goes_with_join() {
    let mut settings = SessionSettings::new(ROOM);
    settings.member_id = Some("device-1".into());
    let mut s = Script { session: Session::new(settings), now: Instant::now() };
    assert_eq!(
        s.send(Event::SignalingConnected),
        vec![Action::Join { room: ROOM.into(), token: None, member: Some("device-1".into()) }]
    );
}

fn offers_to(peer: &str) -> Vec<Action> {
    vec![Action::CreatePeer { peer: peer.into() }, Action::CreateOffer { peer: peer.into(), ice_restart: false }]
}

#[test]
fn a_failed_answerer_offers_again_to_a_viewer_still_in_the_room() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    assert_eq!(s.state("v1", S::Failed), vec![close("v1"), Action::SetViewers(0)]);
    assert_eq!(s.advance(Duration::from_millis(1_900)), vec![]);
    assert_eq!(s.advance(Duration::from_millis(100)), offers_to("v1"), "offered 2 s after the failure");
    // The path is still broken: that attempt fails too; the next waits longer.
    s.state("v1", S::Failed);
    assert_eq!(s.advance(Duration::from_secs(2)), vec![]);
    assert_eq!(s.advance(Duration::from_secs(2)), offers_to("v1"));
    s.state("v1", S::Connected);
    // Recovered: a later failure starts from the shortest delay again.
    s.state("v1", S::Failed);
    assert_eq!(s.advance(Duration::from_secs(2)), offers_to("v1"));
}

#[test]
fn a_disconnect_timeout_in_a_classic_room_is_recovered_too() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), None));
    s.state(UNNAMED_VIEWER, S::Connected);
    s.state(UNNAMED_VIEWER, S::Disconnected);
    // (The encoder already stopped at Disconnected: no viewer receives.)
    assert_eq!(s.advance(Duration::from_secs(10)), vec![close(UNNAMED_VIEWER)]);
    assert_eq!(s.advance(Duration::from_secs(2)), offers_to(UNNAMED_VIEWER));
    // Classic: no `to` on what goes to an unnamed viewer.
    let sent =
        s.peer(PeerEvent::LocalDescription { peer: UNNAMED_VIEWER.into(), kind: SdpKind::Offer, sdp: "o".into() });
    assert_eq!(sent, vec![Action::Send { data: offer("o"), to: None }]);
}

#[test]
fn crossing_offers_are_settled_by_the_device_giving_way() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    s.state("v1", S::Failed);
    assert_eq!(s.advance(Duration::from_secs(2)), offers_to("v1"));
    // The page re-offered at the same time.
    let actions = s.room(message(offer("page-offer"), Some("v1")));
    assert_eq!(
        actions,
        vec![
            close("v1"),
            Action::CreatePeer { peer: "v1".into() },
            Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: "page-offer".into() },
        ]
    );
}

#[test]
fn no_recovery_for_a_viewer_that_said_bye_and_none_for_ever() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    s.state("v1", S::Failed);
    s.room(bye("v1"));
    assert_eq!(s.advance(Duration::from_secs(30)), vec![]);

    s.room(message(offer("o1"), Some("v2")));
    s.state("v2", S::Connected);
    s.state("v2", S::Failed);
    let mut offers = 0;
    for _ in 0..300 {
        for action in s.advance(Duration::from_secs(1)) {
            if let Action::CreateOffer { peer, .. } = action {
                offers += 1;
                s.state(&peer, S::Failed);
            }
        }
    }
    assert!((10..=16).contains(&offers), "{offers} offers in 5 minutes");
    assert_eq!(s.advance(Duration::from_secs(60)), vec![], "given up after 2 minutes");
}

#[test]
fn several_viewers_on_roomcams_server() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.room(message(answer("a1"), Some("v1")));
    s.state("v1", S::Connected);
    // Once the server names senders, a newcomer does not evict the others.
    assert_eq!(
        s.room(otherjoin("v2")),
        vec![Action::CreatePeer { peer: "v2".into() }, Action::CreateOffer { peer: "v2".into(), ice_restart: false }]
    );
    s.room(message(answer("a2"), Some("v2")));
    assert_eq!(s.state("v2", S::Connected), vec![new_viewer_keyframe("v2"), Action::SetViewers(2)]);
    assert_eq!(s.room(bye("v1")), vec![close("v1"), Action::SetViewers(1)]);
    assert_eq!(s.session.peer_ids(), vec!["v2".to_string()]);
}

#[test]
fn failed_connection_is_closed_at_once() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.state("v1", S::Connected);
    assert_eq!(s.state("v1", S::Failed), vec![close("v1"), Action::SetViewers(0)]);
}

#[test]
fn disconnected_peer_gets_an_ice_restart_then_is_closed_after_the_timeout() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.state("v1", S::Connected);
    assert_eq!(
        s.state("v1", S::Disconnected),
        vec![Action::CreateOffer { peer: "v1".into(), ice_restart: true }, Action::SetViewers(0)]
    );
    assert_eq!(s.advance(Duration::from_secs(9)), vec![]);
    assert_eq!(s.advance(Duration::from_secs(1)), vec![close("v1")]);
    assert!(s.session.peer_ids().is_empty());
}

#[test]
fn disconnected_peer_that_recovers_is_kept() {
    let mut s = Script::in_room();
    s.room(message(offer("o"), None));
    s.state(UNNAMED_VIEWER, S::Connected);
    // We answered, so we cannot restart ICE; we wait.
    assert_eq!(s.state(UNNAMED_VIEWER, S::Disconnected), vec![Action::SetViewers(0)]);
    s.advance(Duration::from_secs(5));
    assert_eq!(s.state(UNNAMED_VIEWER, S::Connected), vec![new_viewer_keyframe(UNNAMED_VIEWER), Action::SetViewers(1)]);
    assert_eq!(s.advance(Duration::from_secs(30)), vec![]);
}

#[test]
fn a_peer_that_never_connects_is_dropped() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    assert_eq!(s.advance(Duration::from_secs(29)), vec![]);
    assert_eq!(s.advance(Duration::from_secs(1)), vec![close("v1")]);
}

#[test]
fn full_room_is_retried_later() {
    let mut s = Script::new();
    s.send(Event::SignalingConnected);
    assert_eq!(s.room(RoomEvent::Full { room: ROOM.into() }), vec![]);
    assert_eq!(s.advance(Duration::from_secs(9)), vec![]);
    assert_eq!(s.advance(Duration::from_secs(1)), vec![Action::Join { room: ROOM.into(), token: None, member: None }]);
}

#[test]
fn unauthorized_is_retried_slowly() {
    let mut s = Script::new();
    s.send(Event::SignalingConnected);
    s.room(RoomEvent::Unauthorized { room: ROOM.into() });
    assert_eq!(s.advance(Duration::from_secs(59)), vec![]);
    assert_eq!(s.advance(Duration::from_secs(1)), vec![Action::Join { room: ROOM.into(), token: None, member: None }]);
}

#[test]
fn renegotiation_offer_reuses_the_live_peer() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    assert_eq!(
        s.room(message(offer("o2-ice-restart"), Some("v1"))),
        vec![Action::SetRemoteDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: "o2-ice-restart".into() }]
    );
}

#[test]
fn stray_and_misaddressed_messages_are_dropped() {
    let mut s = Script::in_room();
    assert_eq!(s.room(message(answer("a"), None)), vec![]);
    assert_eq!(s.room(message(SignalData::Candidate(candidate(1)), Some("nobody"))), vec![]);
    assert_eq!(s.room(RoomEvent::OtherJoined { room: "another-room".into(), id: "x".into() }), vec![]);
    // We answered v1: an answer from it is a protocol error, not a crash.
    s.room(message(offer("o"), Some("v1")));
    assert_eq!(s.room(message(answer("a"), Some("v1"))), vec![]);
    // Events for a peer we no longer have are ignored.
    assert_eq!(s.state("ghost", S::Connected), vec![]);
}

#[test]
fn failed_sdp_closes_the_peer_and_the_next_viewer_is_served() {
    let mut s = Script::in_room();
    s.room(message(offer("garbage"), None));
    assert_eq!(
        s.send(Event::PeerFailed { peer: UNNAMED_VIEWER.into(), reason: "bad SDP".into() }),
        vec![close(UNNAMED_VIEWER)]
    );
    assert_eq!(s.room(otherjoin("v2")).len(), 2);
}

#[test]
fn keyframe_requests_are_forwarded_and_say_whether_the_viewer_is_new() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    for new_viewer in [true, false] {
        assert_eq!(
            s.peer(PeerEvent::KeyframeRequested { peer: "v1".into(), new_viewer }),
            vec![Action::RequestKeyframe { peer: "v1".into(), new_viewer }]
        );
    }
    assert_eq!(s.peer(PeerEvent::KeyframeRequested { peer: "stranger".into(), new_viewer: true }), vec![]);
}

#[test]
fn shutdown_closes_peers_and_leaves() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.state("v1", S::Connected);
    assert_eq!(s.send(Event::Shutdown), vec![close("v1"), Action::Leave { room: ROOM.into() }, Action::SetViewers(0)]);
    assert_eq!(s.send(Event::SignalingConnected), vec![]);
}

#[test]
fn renewed_ice_servers_restart_ice_on_live_connections_we_offered_only() {
    let mut s = Script::in_room();
    s.room(otherjoin("v1"));
    s.peer(PeerEvent::LocalDescription { peer: "v1".into(), kind: SdpKind::Offer, sdp: "o".into() });
    s.room(message(answer("a"), Some("v1")));
    s.state("v1", S::Connected);
    // A viewer that offered first: its side restarts, not ours.
    s.room(message(offer("o2"), Some("v2")));
    s.state("v2", S::Connected);
    // A viewer still connecting gathers with the new servers anyway.
    s.room(otherjoin("v3"));
    assert_eq!(s.send(Event::IceServersRenewed), vec![Action::CreateOffer { peer: "v1".into(), ice_restart: true }]);
    // Until v1 answers, a second renewal does not stack another offer.
    assert_eq!(s.send(Event::IceServersRenewed), vec![]);
}

#[test]
fn a_failed_whep_viewer_is_told_bye_and_never_offered_to_again() {
    let whep = "whep-0123456789abcdef0123456789abcdef";
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some(whep)));
    s.state(whep, S::Connected);
    assert_eq!(
        s.state(whep, S::Failed),
        vec![close(whep), Action::Send { data: SignalData::Bye, to: Some(whep.into()) }, Action::SetViewers(0)],
        "the server ends its session"
    );
    for _ in 0..10 {
        assert_eq!(s.advance(Duration::from_secs(5)), vec![], "a WHEP player only ever POSTs: no offer to it");
    }
}

#[test]
fn a_viewer_that_says_bye_in_a_message_is_closed_and_not_recovered() {
    let mut s = Script::in_room();
    s.room(message(offer("o1"), Some("v1")));
    s.state("v1", S::Connected);
    assert_eq!(s.room(message(SignalData::Bye, Some("v1"))), vec![close("v1"), Action::SetViewers(0)]);
    assert_eq!(s.advance(Duration::from_secs(10)), vec![]);
}
