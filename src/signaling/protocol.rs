//! The room protocol of `PROTOCOL.md` on top of socket.io events: what the
//! server tells us (`RoomEvent`), what we ask of it, and the `data` payload of
//! `message` events (`SignalData`). Pure conversions, no I/O.

use serde_json::{Value, json};

use crate::peer::{IceCandidate, PeerId, SdpKind};

#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    Joined {
        room: String,
        id: String,
    },
    OtherJoined {
        room: String,
        id: String,
    },
    Full {
        room: String,
    },
    Unauthorized {
        room: String,
    },
    Message {
        room: String,
        data: SignalData,
        from: Option<PeerId>,
    },
    Bye {
        room: String,
        id: String,
    },
    Left {
        room: String,
    },
    /// roomcam's server: the room's device lost its connection at `since_ms`
    /// (Unix milliseconds); sent to the viewers, and to one that joins meanwhile.
    DeviceOffline {
        room: String,
        since_ms: u64,
    },
    /// roomcam's server: the room's device is back.
    DeviceOnline {
        room: String,
    },
}

/// What travels inside `message` between the two ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalData {
    Description {
        kind: SdpKind,
        sdp: String,
    },
    Candidate(IceCandidate),
    /// roomcam's extension, sent only to a WHEP viewer's member on roomcam's
    /// server (see [`is_whep_member`]): its peer is closed for good (it
    /// cannot be offered to again), so the server ends its session.
    Bye,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("event {event:?}: argument {index} should be {expected}")]
    BadArgument { event: &'static str, index: usize, expected: &'static str },
    #[error("message data: {0}")]
    BadData(String),
}

fn string_arg(args: &[Value], event: &'static str, index: usize) -> Result<String, ProtocolError> {
    args.get(index).and_then(Value::as_str).map(str::to_owned).ok_or(ProtocolError::BadArgument {
        event,
        index,
        expected: "a string",
    })
}

impl RoomEvent {
    pub fn from_socket_event(name: &str, args: &[Value]) -> Result<RoomEvent, ProtocolError> {
        let room = |event| string_arg(args, event, 0);
        Ok(match name {
            "joined" => RoomEvent::Joined { room: room("joined")?, id: string_arg(args, "joined", 1)? },
            "otherjoin" => RoomEvent::OtherJoined { room: room("otherjoin")?, id: string_arg(args, "otherjoin", 1)? },
            "full" => RoomEvent::Full { room: room("full")? },
            "unauthorized" => RoomEvent::Unauthorized { room: room("unauthorized")? },
            "bye" => RoomEvent::Bye { room: room("bye")?, id: string_arg(args, "bye", 1)? },
            "leaved" => RoomEvent::Left { room: room("leaved")? },
            "device-offline" => {
                RoomEvent::DeviceOffline {
                    room: room("device-offline")?,
                    since_ms: args.get(1).and_then(|a| a.get("since")).and_then(Value::as_u64).ok_or(
                        ProtocolError::BadArgument { event: "device-offline", index: 1, expected: "{since: ms}" },
                    )?,
                }
            }
            "device-online" => RoomEvent::DeviceOnline { room: room("device-online")? },
            "message" => {
                let room = room("message")?;
                let data = args.get(1).ok_or(ProtocolError::BadArgument {
                    event: "message",
                    index: 1,
                    expected: "the data object",
                })?;
                let from = args.get(2).and_then(Value::as_str).map(str::to_owned);
                RoomEvent::Message { room, data: SignalData::from_json(data)?, from }
            }
            other => return Err(ProtocolError::UnknownEvent(other.to_owned())),
        })
    }
}

impl SignalData {
    pub fn from_json(data: &Value) -> Result<SignalData, ProtocolError> {
        // Some classic clients send the data JSON-encoded as a string.
        if let Value::String(text) = data {
            let parsed: Value =
                serde_json::from_str(text).map_err(|_| ProtocolError::BadData("a string that is not JSON".into()))?;
            if parsed.is_string() {
                return Err(ProtocolError::BadData("doubly encoded string".into()));
            }
            return SignalData::from_json(&parsed);
        }
        let kind =
            data.get("type").and_then(Value::as_str).ok_or_else(|| ProtocolError::BadData("no \"type\"".into()))?;
        let text = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ProtocolError::BadData(format!("{kind}: no string \"{key}\"")))
        };
        match kind {
            "offer" => Ok(SignalData::Description { kind: SdpKind::Offer, sdp: text("sdp")? }),
            "answer" => Ok(SignalData::Description { kind: SdpKind::Answer, sdp: text("sdp")? }),
            "candidate" => {
                let label = match data.get("label") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .ok_or_else(|| ProtocolError::BadData("candidate: bad \"label\"".into()))?,
                    ),
                };
                let mid = match data.get("id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    // Some clients send the mid as a number.
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(_) => return Err(ProtocolError::BadData("candidate: bad \"id\"".into())),
                };
                Ok(SignalData::Candidate(IceCandidate {
                    candidate: text("candidate")?,
                    sdp_mid: mid,
                    sdp_mline_index: label,
                }))
            }
            "bye" => Ok(SignalData::Bye),
            other => Err(ProtocolError::BadData(format!("unknown type {other:?}"))),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            SignalData::Description { kind, sdp } => json!({
                "type": match kind { SdpKind::Offer => "offer", SdpKind::Answer => "answer" },
                "sdp": sdp,
            }),
            SignalData::Candidate(c) => json!({
                "type": "candidate",
                "label": c.sdp_mline_index.unwrap_or(0),
                "id": c.sdp_mid.clone().unwrap_or_else(|| c.sdp_mline_index.unwrap_or(0).to_string()),
                "candidate": c.candidate,
            }),
            SignalData::Bye => json!({ "type": "bye" }),
        }
    }
}

/// What the device asks of the server, as socket.io event name + arguments.
/// `join`, with roomcam's options (`token`, `member`) when there are any;
/// classic servers ignore the extra argument.
pub fn join_event(room: &str, token: Option<&str>, member: Option<&str>) -> (&'static str, Vec<Value>) {
    let mut args = vec![json!(room)];
    let mut options = serde_json::Map::new();
    if let Some(token) = token {
        options.insert("token".into(), json!(token));
    }
    if let Some(member) = member {
        options.insert("member".into(), json!(member));
    }
    if !options.is_empty() {
        args.push(Value::Object(options));
    }
    ("join", args)
}

/// A stable member id (roomcam's extension): letters, digits, `-` and `_`,
/// 1 to 64 of them.
pub fn valid_member_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a device's member id starts with ([`new_member_id`]`(DEVICE_MEMBER_PREFIX)`):
/// roomcam's server takes the member whose id has it as the room's device.
pub const DEVICE_MEMBER_PREFIX: &str = "device";

/// Is `id` a device's member id (`device-…`)?
pub fn is_device_member(id: &str) -> bool {
    id.strip_prefix(DEVICE_MEMBER_PREFIX).is_some_and(|rest| rest.starts_with('-')) && valid_member_id(id)
}

/// What the member id of a WHEP viewer starts with: roomcam's server makes
/// one for each `POST /whep/ROOM`, relays its offer, and hands the answer
/// back over HTTP. It cannot trickle: the device answers it with every
/// candidate in the SDP, and never offers to it again.
pub const WHEP_MEMBER_PREFIX: &str = "whep";

pub fn is_whep_member(id: &str) -> bool {
    id.strip_prefix(WHEP_MEMBER_PREFIX).is_some_and(|rest| rest.starts_with('-')) && valid_member_id(id)
}

/// A member id for this process: the same across its reconnections, so
/// viewers on roomcam's server know the device again after an outage.
pub fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

pub fn leave_event(room: &str) -> (&'static str, Vec<Value>) {
    ("leave", vec![json!(room)])
}

pub fn message_event(room: &str, data: &SignalData, to: Option<&str>) -> (&'static str, Vec<Value>) {
    let mut args = vec![json!(room), data.to_json()];
    if let Some(to) = to {
        args.push(json!(to));
    }
    ("message", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_room_events() {
        assert_eq!(
            RoomEvent::from_socket_event("otherjoin", &[json!("r"), json!("v1")]).unwrap(),
            RoomEvent::OtherJoined { room: "r".into(), id: "v1".into() }
        );
        assert_eq!(
            RoomEvent::from_socket_event("device-offline", &[json!("r"), json!({"since": 1_796_311_807_000u64})])
                .unwrap(),
            RoomEvent::DeviceOffline { room: "r".into(), since_ms: 1_796_311_807_000 }
        );
        assert!(RoomEvent::from_socket_event("device-offline", &[json!("r")]).is_err());
        assert_eq!(
            RoomEvent::from_socket_event("device-online", &[json!("r")]).unwrap(),
            RoomEvent::DeviceOnline { room: "r".into() }
        );
        assert_eq!(
            RoomEvent::from_socket_event("full", &[json!("r"), json!("me")]).unwrap(),
            RoomEvent::Full { room: "r".into() }
        );
        assert_eq!(
            RoomEvent::from_socket_event("message", &[json!("r"), json!({"type":"answer","sdp":"v=0"}), json!("v1")])
                .unwrap(),
            RoomEvent::Message {
                room: "r".into(),
                data: SignalData::Description { kind: SdpKind::Answer, sdp: "v=0".into() },
                from: Some("v1".into())
            }
        );
    }

    #[test]
    fn classic_candidate_round_trip() {
        let wire =
            json!({"type":"candidate","label":1,"id":"1","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host"});
        let data = SignalData::from_json(&wire).unwrap();
        assert_eq!(
            data,
            SignalData::Candidate(IceCandidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                sdp_mid: Some("1".into()),
                sdp_mline_index: Some(1),
            })
        );
        assert_eq!(data.to_json(), wire);
    }

    #[test]
    fn string_encoded_data_is_accepted() {
        let wire = json!("{\"type\":\"offer\",\"sdp\":\"v=0\"}");
        assert_eq!(
            SignalData::from_json(&wire).unwrap(),
            SignalData::Description { kind: SdpKind::Offer, sdp: "v=0".into() }
        );
    }

    #[test]
    fn invalid_messages_are_errors() {
        let bad = [
            json!({}),
            json!({"type": 5}),
            json!({"type": "offer"}),
            json!({"type": "offer", "sdp": 1}),
            json!({"type": "candidate", "label": -1, "candidate": "c"}),
            json!({"type": "candidate", "label": "x", "candidate": "c"}),
            json!({"type": "candidate", "id": [], "candidate": "c"}),
            json!({"type": "candidate"}),
            json!({"type": "hello"}),
            json!("not json"),
            json!("\"still a string\""),
            json!(42),
            json!(null),
        ];
        for data in bad {
            assert!(SignalData::from_json(&data).is_err(), "{data} should be rejected");
        }
        assert!(RoomEvent::from_socket_event("message", &[json!("r")]).is_err());
        assert!(RoomEvent::from_socket_event("joined", &[json!(1), json!("x")]).is_err());
        assert!(RoomEvent::from_socket_event("joined", &[]).is_err());
        assert!(matches!(RoomEvent::from_socket_event("weird", &[]), Err(ProtocolError::UnknownEvent(_))));
    }

    #[test]
    fn join_carries_the_token_only_when_set() {
        assert_eq!(join_event("r", None, None).1, vec![json!("r")]);
        assert_eq!(join_event("r", Some("s"), None).1, vec![json!("r"), json!({"token":"s"})]);
        assert_eq!(join_event("r", Some("s"), Some("m-1")).1, vec![json!("r"), json!({"token":"s", "member":"m-1"})]);
        assert!(valid_member_id(&new_member_id("device")));
        assert!(is_device_member(&new_member_id(DEVICE_MEMBER_PREFIX)));
        assert!(is_whep_member(&new_member_id(WHEP_MEMBER_PREFIX)) && !is_whep_member("whepx-1"));
        assert!(!is_whep_member(&new_member_id(DEVICE_MEMBER_PREFIX)));
        assert_eq!(SignalData::from_json(&SignalData::Bye.to_json()), Ok(SignalData::Bye));
        assert!(!is_device_member("viewer-01") && !is_device_member("devices-1") && !is_device_member("device"));
        assert!(!valid_member_id("") && !valid_member_id("a b") && !valid_member_id(&"x".repeat(65)));
    }
}
