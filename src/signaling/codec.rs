//! Engine.IO (v3 and v4) and socket.io packet codec for text frames.
//!
//! Pure functions: one WebSocket text frame in, one `Packet` out (or a
//! `CodecError`). Nothing a server sends can make this panic.

use serde_json::Value;

/// Engine.IO protocol revision: 3 is socket.io 2.x, 4 is socket.io 3.x/4.x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineIoVersion {
    V3,
    V4,
}

impl EngineIoVersion {
    pub fn query_value(self) -> &'static str {
        match self {
            EngineIoVersion::V3 => "3",
            EngineIoVersion::V4 => "4",
        }
    }
}

/// The Engine.IO handshake (`0{...}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenInfo {
    pub sid: String,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// Only Engine.IO 4 servers send `maxPayload`; its absence tells an
    /// Engine.IO 3 server that did not refuse an EIO=4 request.
    pub max_payload: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    Open(OpenInfo),
    Close,
    Ping(String),
    Pong(String),
    Noop,
    Upgrade,
    /// socket.io CONNECT for the default namespace (v4 carries `{"sid":…}`).
    Connect {
        sid: Option<String>,
    },
    /// socket.io DISCONNECT (the server kicked us out of the namespace).
    Disconnect,
    /// socket.io CONNECT_ERROR (v4) / ERROR (v3).
    ConnectError(Value),
    Event {
        name: String,
        args: Vec<Value>,
    },
    /// Acks and binary packets: roomcam's protocol uses neither.
    Ignored,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty frame")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    #[error("unknown socket.io packet type {0:?}")]
    UnknownSocketType(char),
    #[error("bad handshake: {0}")]
    BadOpen(String),
    #[error("bad event payload: {0}")]
    BadEvent(String),
    #[error("packet for namespace {0:?}, roomcam only uses \"/\"")]
    OtherNamespace(String),
}

pub fn decode(frame: &str) -> Result<Packet, CodecError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    match kind {
        '0' => decode_open(rest).map(Packet::Open),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping(rest.to_owned())),
        '3' => Ok(Packet::Pong(rest.to_owned())),
        '4' => decode_socket_io(rest),
        '5' => Ok(Packet::Upgrade),
        '6' => Ok(Packet::Noop),
        other => Err(CodecError::UnknownEngineType(other)),
    }
}

fn decode_open(json: &str) -> Result<OpenInfo, CodecError> {
    let value: Value = serde_json::from_str(json).map_err(|e| CodecError::BadOpen(e.to_string()))?;
    let sid = value.get("sid").and_then(Value::as_str).ok_or_else(|| CodecError::BadOpen("no sid".into()))?.to_owned();
    let number = |key: &str| value.get(key).and_then(Value::as_u64);
    Ok(OpenInfo {
        sid,
        ping_interval_ms: number("pingInterval").ok_or_else(|| CodecError::BadOpen("no pingInterval".into()))?,
        ping_timeout_ms: number("pingTimeout").ok_or_else(|| CodecError::BadOpen("no pingTimeout".into()))?,
        max_payload: number("maxPayload"),
    })
}

fn decode_socket_io(body: &str) -> Result<Packet, CodecError> {
    let mut chars = body.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let mut rest = chars.as_str();
    // Binary packets carry an attachment count before the namespace.
    if matches!(kind, '5' | '6') {
        return Ok(Packet::Ignored);
    }
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let namespace = &rest[..end];
        if namespace != "/" {
            return Err(CodecError::OtherNamespace(namespace.to_owned()));
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    match kind {
        '0' => {
            let sid = if rest.is_empty() {
                None
            } else {
                serde_json::from_str::<Value>(rest)
                    .ok()
                    .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_owned))
            };
            Ok(Packet::Connect { sid })
        }
        '1' => Ok(Packet::Disconnect),
        '2' => {
            let json = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            decode_event(json)
        }
        '3' => Ok(Packet::Ignored),
        '4' => Ok(Packet::ConnectError(serde_json::from_str(rest).unwrap_or_else(|_| Value::String(rest.to_owned())))),
        other => Err(CodecError::UnknownSocketType(other)),
    }
}

fn decode_event(json: &str) -> Result<Packet, CodecError> {
    let value: Value = serde_json::from_str(json).map_err(|e| CodecError::BadEvent(e.to_string()))?;
    let Value::Array(mut items) = value else {
        return Err(CodecError::BadEvent("not an array".into()));
    };
    if items.is_empty() {
        return Err(CodecError::BadEvent("no event name".into()));
    }
    let Value::String(name) = items.remove(0) else {
        return Err(CodecError::BadEvent("event name is not a string".into()));
    };
    Ok(Packet::Event { name, args: items })
}

pub const PING: &str = "2";
pub const PONG: &str = "3";
/// socket.io CONNECT to the default namespace (the client sends it with EIO 4).
pub const CONNECT: &str = "40";

pub fn encode_event(name: &str, args: &[Value]) -> String {
    let mut array = Vec::with_capacity(args.len() + 1);
    array.push(Value::String(name.to_owned()));
    array.extend_from_slice(args);
    format!("42{}", Value::Array(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_v4_open() {
        let p = decode(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#)
            .unwrap();
        assert_eq!(
            p,
            Packet::Open(OpenInfo {
                sid: "abc".into(),
                ping_interval_ms: 25000,
                ping_timeout_ms: 20000,
                max_payload: Some(1_000_000)
            })
        );
    }

    #[test]
    fn decodes_v3_open_without_max_payload() {
        let Packet::Open(info) =
            decode(r#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":5000}"#).unwrap()
        else {
            panic!("not an open packet")
        };
        assert_eq!(info.max_payload, None);
        assert_eq!(info.ping_timeout_ms, 5000);
    }

    #[test]
    fn decodes_connect_both_versions() {
        assert_eq!(decode("40").unwrap(), Packet::Connect { sid: None });
        assert_eq!(decode(r#"40{"sid":"s1"}"#).unwrap(), Packet::Connect { sid: Some("s1".into()) });
        assert_eq!(decode("40/,").unwrap(), Packet::Connect { sid: None });
    }

    #[test]
    fn decodes_events_with_ack_ids_and_namespace() {
        assert_eq!(
            decode(r#"42["joined","room1","id1"]"#).unwrap(),
            Packet::Event { name: "joined".into(), args: vec![json!("room1"), json!("id1")] }
        );
        assert_eq!(
            decode(r#"4212["message","r",{"type":"offer"}]"#).unwrap(),
            Packet::Event { name: "message".into(), args: vec![json!("r"), json!({"type":"offer"})] }
        );
        assert_eq!(
            decode(r#"42/,7["bye","r","x"]"#).unwrap(),
            Packet::Event { name: "bye".into(), args: vec![json!("r"), json!("x")] }
        );
    }

    #[test]
    fn pings_pongs_and_others() {
        assert_eq!(decode("2").unwrap(), Packet::Ping(String::new()));
        assert_eq!(decode("3probe").unwrap(), Packet::Pong("probe".into()));
        assert_eq!(decode("1").unwrap(), Packet::Close);
        assert_eq!(decode("6").unwrap(), Packet::Noop);
        assert_eq!(decode("41").unwrap(), Packet::Disconnect);
        assert_eq!(decode(r#"44{"message":"no"}"#).unwrap(), Packet::ConnectError(json!({"message":"no"})));
        assert_eq!(decode(r#"451-["x",{"_placeholder":true,"num":0}]"#).unwrap(), Packet::Ignored);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "9",
            "4",
            "4x",
            "42",
            "42{",
            "42[]",
            "42[1,2]",
            "42{\"a\":1}",
            "0",
            "0{}",
            "0{\"sid\":5}",
            "0{\"sid\":\"a\",\"pingInterval\":\"x\",\"pingTimeout\":1}",
            "42/admin,[\"x\"]",
            "42/",
            "42\u{0}",
            "4\u{1F600}",
            "\u{1F600}",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} should not decode");
        }
    }

    #[test]
    fn encodes_events() {
        assert_eq!(encode_event("join", &[json!("room"), json!({"token":"t"})]), r#"42["join","room",{"token":"t"}]"#);
        let round = decode(&encode_event("message", &[json!("r"), json!({"sdp":"v=0\r\n"})])).unwrap();
        assert_eq!(round, Packet::Event { name: "message".into(), args: vec![json!("r"), json!({"sdp":"v=0\r\n"})] });
    }
}
