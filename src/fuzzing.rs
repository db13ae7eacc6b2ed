//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for
//! `tests/fuzz_corpus.rs`, which runs the same functions over the corpus and
//! over mutations of it with the stable toolchain: what a server, a viewer or
//! an operator hands roomcam (signaling frames, room messages, the config
//! file, remote SDP, RTCP feedback). The camera and H.264 ingestion paths are
//! in `media::fuzzing`. Each takes arbitrary bytes, must never panic, and
//! asserts the invariants that are cheap to check.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, AttributedPacket, Packet as InterceptorPacket, TaggedPacket};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;
use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::peer::congestion::EstimateSink;
use crate::peer::connection::{check_candidate_target, first_mid, parse_remote_candidate, parse_remote_description};
use crate::peer::rtcp::{KeyframeRequestForwarder, is_keyframe_request};
use crate::peer::{CongestionSettings, IceCandidate, SdpKind};
use crate::session::{Event, Session, SessionSettings, dtls_fingerprint};
use crate::signaling::client::preview;
use crate::signaling::codec::{self, Packet};
use crate::signaling::protocol::{RoomEvent, SignalData, message_event};

/// The room the corpus's captures were recorded in (fuzz/capture/).
const CAPTURED_ROOM: &str = "fuzz";

/// One WebSocket text frame from a socket.io 2 (Engine.IO 3) or 4
/// (Engine.IO 4) server, as the device's client decodes it. A decoded event
/// re-encoded by roomcam decodes back to the same event, and the pong it
/// answers a ping with carries the ping's payload.
pub fn socketio_frame(data: &[u8]) {
    // WebSocket text frames are UTF-8; tungstenite rejects anything else.
    let Ok(frame) = std::str::from_utf8(data) else { return };
    match codec::decode(frame) {
        Ok(Packet::Event { name, args }) => {
            match codec::decode(&codec::encode_event(&name, &args)) {
                Ok(Packet::Event { name: name_again, args: args_again }) => {
                    assert_eq!(name, name_again, "event name changed in a round trip");
                    assert!(
                        args.len() == args_again.len() && args.iter().zip(&args_again).all(|(a, b)| same_json(a, b)),
                        "event arguments changed in a round trip: {args:?} -> {args_again:?}"
                    );
                }
                other => panic!("an encoded event decodes as {other:?}"),
            }
            let _ = RoomEvent::from_socket_event(&name, &args);
        }
        Ok(Packet::Ping(payload)) => {
            let pong = codec::decode(&format!("{}{payload}", codec::PONG));
            assert_eq!(pong, Ok(Packet::Pong(payload)), "a pong does not carry the ping's payload");
        }
        Ok(_) => {}
        Err(e) => {
            // What the client logs about a frame it drops.
            let _ = format!("{e}: {}", preview(frame));
        }
    }
}

/// A signaling session as the device sees it: socket.io frames, one a line,
/// decoded into room events and handed to the session core in order (a
/// second of clock between them). Also, any line that is plain JSON is taken
/// as a `message` payload (offer, answer, candidate). Every payload that
/// parses survives roomcam's own encoding of it.
pub fn room_messages(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut session = Session::new(SessionSettings::new(CAPTURED_ROOM));
    let mut now = Instant::now();
    let _ = session.handle(Event::SignalingConnected, now);
    for line in text.lines() {
        now += Duration::from_secs(1);
        let event = match codec::decode(line) {
            Ok(Packet::Event { name, args }) => RoomEvent::from_socket_event(&name, &args),
            _ => match serde_json::from_str::<Value>(line) {
                Ok(json) => SignalData::from_json(&json).map(|data| RoomEvent::Message {
                    room: CAPTURED_ROOM.into(),
                    data,
                    from: None,
                }),
                Err(_) => continue,
            },
        };
        let Ok(event) = event else { continue };
        if let RoomEvent::Message { room, data, from } = &event {
            signal_data_round_trip(room, data, from.as_deref());
        }
        let _ = session.handle(Event::Room(event), now);
        let _ = session.handle(Event::Tick, now);
    }
    let _ = session.handle(Event::SignalingDisconnected, now);
}

/// What roomcam sends of a payload it parsed is read back the same, and
/// re-encoding that changes nothing more (a candidate without `label`/`id`
/// gains the defaults once).
fn signal_data_round_trip(room: &str, data: &SignalData, to: Option<&str>) {
    let (name, args) = message_event(room, data, to);
    let read_back = match RoomEvent::from_socket_event(name, &args) {
        Ok(RoomEvent::Message { room: room_back, data: read_back, from }) => {
            assert_eq!(room_back, room, "message room changed in a round trip");
            assert_eq!(from.as_deref(), to, "message addressee changed in a round trip");
            read_back
        }
        other => panic!("a message roomcam encoded reads back as {other:?}"),
    };
    assert_eq!(read_back.to_json(), data.to_json(), "message data changed in a round trip");
    match (data, &read_back) {
        (SignalData::Description { .. }, _) => assert_eq!(&read_back, data, "description changed in a round trip"),
        (SignalData::Candidate(sent), SignalData::Candidate(back)) => {
            assert_eq!(sent.candidate, back.candidate, "candidate line changed in a round trip");
        }
        (SignalData::Bye, SignalData::Bye) => {}
        _ => panic!("a candidate read back as {read_back:?}"),
    }
}

/// JSON equality, numbers within float rounding: serde_json's default float
/// parser is not exact to the last bit, so a float may move by an ulp when
/// written and read back.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}

/// The configuration file, alone and under each board profile (and an
/// unknown one). A configuration that loads passes its own validation, and
/// what the daemon derives from it can be computed.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("roomcam.toml");
    let board = {
        let mut names = crate::board::names();
        names.push("no-such-board");
        names[data.len() % names.len()]
    };
    for parsed in [Config::parse(text, path), Config::parse_with_board(text, path, Some(board))] {
        match parsed {
            Ok(config) => {
                assert_eq!(config.validate(), Ok(()), "a loaded configuration fails validation");
                let _ = config.webrtc.disconnect_timeout();
                let _ = CongestionSettings::from_config(&config, true);
                let _ = CongestionSettings::from_config(&config, false);
                let _ = config.camera.format.only();
            }
            Err(ConfigError::Syntax { line, column, .. }) => {
                assert!(line >= 1 && line <= text.lines().count() + 1, "syntax error at line {line}");
                assert!(column >= 1, "syntax error at column {column}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// A viewer's SDP as roomcam checks it before webrtc-rs applies it (and its
/// video bandwidth ceiling as the rate policy gets it), and the
/// candidates in it as if trickled. A description roomcam accepts has a mid
/// on every media section, so a candidate for its first mid is never
/// refused for its target.
pub fn remote_description(data: &[u8]) {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    if let Some(fingerprint) = dtls_fingerprint(sdp) {
        assert_eq!(fingerprint, fingerprint.trim().to_ascii_lowercase(), "fingerprint not normalised");
    }
    // A data saver's ceiling: never zero (that would stop the video).
    if let Some(ceiling) = crate::peer::bandwidth::video_ceiling_bps(sdp) {
        assert!(ceiling > 0, "a zero video ceiling from {sdp:?}");
    }
    // Offers and answers parse alike; alternate so both paths run.
    let kind = if data.len() % 2 == 0 { SdpKind::Offer } else { SdpKind::Answer };
    let description = parse_remote_description(kind, sdp.to_owned()).ok();
    let mid = description.as_ref().map(|d| first_mid(d).expect("an accepted description has a first mid"));
    for line in sdp.lines().filter(|l| l.contains("candidate")) {
        let trickled = IceCandidate { candidate: line.to_owned(), sdp_mid: mid.clone(), sdp_mline_index: Some(0) };
        let Ok(Some(candidate)) = parse_remote_candidate(trickled) else { continue };
        assert!(!candidate.candidate.starts_with("a="), "candidate kept its a= prefix");
        if let Some(description) = &description {
            assert!(
                check_candidate_target(description, &candidate).is_ok(),
                "a candidate for the first mid was refused"
            );
            let beyond = IceCandidate { sdp_mid: None, sdp_mline_index: Some(u16::MAX), ..candidate };
            assert!(check_candidate_target(description, &beyond).is_err(), "m-line index {} accepted", u16::MAX);
        }
    }
}

/// One RTCP datagram from a viewer through roomcam's keyframe-request
/// forwarder and REMB reader: exactly its PLI/FIR reach the application,
/// marked for it, and any estimate reported is one of its REMB bitrates.
pub fn rtcp_feedback(data: &[u8]) {
    let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &data[..]) else { return };
    let requests = packets.iter().filter(|p| is_keyframe_request(std::slice::from_ref(*p))).count();
    let remb_bitrates: Vec<f64> = packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .map(|remb| f64::from(remb.bitrate))
        .collect();

    let estimates = Arc::new(Mutex::new(Vec::new()));
    let reported = Arc::clone(&estimates);
    let sink = EstimateSink::new(move |bps| reported.lock().unwrap_or_else(|p| p.into_inner()).push(bps));
    let mut forwarder = KeyframeRequestForwarder::with_remb_sink(Some(Arc::new(sink)));
    let datagram = TaggedPacket {
        now: Instant::now(),
        transport: TransportContext::default(),
        message: AttributedPacket::new(InterceptorPacket::Rtcp(packets)),
    };
    forwarder.handle_read(datagram).expect("the forwarder refused a datagram");

    match forwarder.poll_read() {
        None => assert_eq!(requests, 0, "keyframe requests were dropped"),
        Some(delivered) => {
            assert!(delivered.message.has(&Attribute::DeliverToApplication), "not marked for the application");
            let InterceptorPacket::Rtcp(forwarded) = &delivered.message.packet else { panic!("RTCP came out as RTP") };
            assert_eq!(forwarded.len(), requests, "not every keyframe request was forwarded");
            assert!(
                forwarded.iter().all(|p| is_keyframe_request(std::slice::from_ref(p))),
                "forwarded something besides keyframe requests"
            );
        }
    }
    assert!(forwarder.poll_read().is_none(), "one datagram in, more than one out");
    for estimate in estimates.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        assert!(
            remb_bitrates.iter().any(|&bps| bps.round() as u64 == *estimate),
            "estimate {estimate} is none of the REMB bitrates {remb_bitrates:?}"
        );
    }
}
