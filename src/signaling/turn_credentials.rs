//! Short-lived TURN credentials, coturn's REST API convention
//! (`use-auth-secret` + `static-auth-secret`): the username is
//! `"<expiry unix time>:<room>:<member id>"` and the password
//! `base64(HMAC-SHA1(secret, username))`, so coturn checks them with the
//! shared secret alone and refuses them once the expiry has passed. Pure
//! functions, no I/O; the time is passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

/// What a member gets in the `turn` event: TURN servers and the
/// credentials for them, valid for `ttl` seconds from when they were made.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
    pub ttl: u64,
}

/// The credential stays out of `{:?}`: a debug log line must not carry it.
impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &"<hidden>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurnCredentialsError {
    #[error("turn event: argument {0} is missing or not {1}")]
    BadArgument(usize, &'static str),
    #[error("turn event: no string {0:?}")]
    MissingField(&'static str),
    #[error("turn event: \"urls\" must be a non-empty list of turn: or turns: URLs")]
    BadUrls,
}

/// `"<expiry>:<room>:<member>"`. coturn reads the expiry up to the first `:`,
/// so a room name with colons in it is harmless.
pub fn username(expiry_unix: u64, room: &str, member: &str) -> String {
    format!("{expiry_unix}:{room}:{member}")
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn password(secret: &str, username: &str) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials for `member` of `room` that expire `ttl` seconds after `now`.
pub fn mint(
    secret: &str,
    urls: &[String],
    ttl: Duration,
    room: &str,
    member: &str,
    now: SystemTime,
) -> TurnCredentials {
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let username = username(now_unix + ttl.as_secs(), room, member);
    let credential = password(secret, &username);
    TurnCredentials { urls: urls.to_vec(), username, credential, ttl: ttl.as_secs() }
}

/// When to send fresh credentials: at 80 % of their lifetime, so that they
/// arrive well before the old ones expire even on a slow link.
pub fn refresh_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8).max(Duration::from_millis(500))
}

impl TurnCredentials {
    /// The event's second argument: `{urls, username, credential, ttl}`,
    /// also the shape of an RTCIceServer for the page.
    pub fn to_json(&self) -> Value {
        json!({ "urls": self.urls, "username": self.username, "credential": self.credential, "ttl": self.ttl })
    }

    /// The `turn` event's arguments `(room, {urls, username, credential, ttl})`.
    pub fn from_event_args(args: &[Value]) -> Result<(String, TurnCredentials), TurnCredentialsError> {
        let room = args.first().and_then(Value::as_str).ok_or(TurnCredentialsError::BadArgument(0, "a room name"))?;
        let data = args.get(1).filter(|d| d.is_object()).ok_or(TurnCredentialsError::BadArgument(1, "an object"))?;
        let text = |key: &'static str| {
            data.get(key).and_then(Value::as_str).map(str::to_owned).ok_or(TurnCredentialsError::MissingField(key))
        };
        let urls: Vec<String> = data
            .get("urls")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let is_turn = |u: &String| u.starts_with("turn:") || u.starts_with("turns:");
        if urls.is_empty() || !urls.iter().all(is_turn) {
            return Err(TurnCredentialsError::BadUrls);
        }
        let ttl = data.get("ttl").and_then(Value::as_u64).unwrap_or(0);
        Ok((
            room.to_owned(),
            TurnCredentials { urls, username: text("username")?, credential: text("credential")?, ttl },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known vectors: a REST-style username (the value computed once with
    /// the command below) and RFC 2202's HMAC-SHA1 test case 2; the next
    /// test runs openssl itself.
    #[test]
    fn password_is_base64_hmac_sha1_of_the_username() {
        // printf %s '1433895918506:my_username' | openssl dgst -sha1 -hmac 'my_secret' -binary | base64
        assert_eq!(password("my_secret", "1433895918506:my_username"), "gKwSWE2uKuZnhCArog06lwc23/A=");
        // RFC 2202's HMAC-SHA1 test case 2, base64 of effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(password("Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn password_matches_openssl() {
        let user = username(1_796_294_294, "nursery", "device-00ff");
        let Ok(output) = std::process::Command::new("sh")
            .args(["-c", "printf %s \"$1\" | openssl dgst -sha1 -hmac \"$2\" -binary | base64", "sh", &user, "s3cr3t"])
            .output()
        else {
            panic!("openssl and sh are needed for this test (apt-get install openssl)");
        };
        assert!(output.status.success(), "openssl failed: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(password("s3cr3t", &user), String::from_utf8_lossy(&output.stdout).trim());
    }

    #[test]
    fn minted_credentials_carry_expiry_room_and_member() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let urls = vec!["turn:turn.example.org:3478?transport=udp".to_owned()];
        let minted = mint("s", &urls, Duration::from_secs(86_400), "nursery", "viewer-1", now);
        assert_eq!(minted.username, "1700086400:nursery:viewer-1");
        assert_eq!(minted.credential, password("s", "1700086400:nursery:viewer-1"));
        assert_eq!((minted.ttl, minted.urls.clone()), (86_400, urls));
        assert!(!format!("{minted:?}").contains(&minted.credential), "Debug must hide the credential");
        assert_eq!(refresh_after(Duration::from_secs(100)), Duration::from_secs(80));
    }

    #[test]
    fn event_round_trip_and_bad_events() {
        let minted = mint("s", &["turns:t.example:5349".into()], Duration::from_secs(60), "r", "m", UNIX_EPOCH);
        let args = [json!("r"), minted.to_json()];
        assert_eq!(TurnCredentials::from_event_args(&args), Ok(("r".into(), minted.clone())));
        let bad = [
            vec![],
            vec![json!(1), minted.to_json()],
            vec![json!("r")],
            vec![json!("r"), json!("x")],
            vec![json!("r"), json!({"urls": [], "username": "u", "credential": "c"})],
            vec![json!("r"), json!({"urls": ["stun:x"], "username": "u", "credential": "c"})],
            vec![json!("r"), json!({"urls": ["turn:x"], "credential": "c"})],
            vec![json!("r"), json!({"urls": ["turn:x"], "username": "u", "credential": 5})],
        ];
        for args in bad {
            assert!(TurnCredentials::from_event_args(&args).is_err(), "{args:?} should be refused");
        }
    }
}
