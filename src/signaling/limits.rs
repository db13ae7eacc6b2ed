//! What `roomcam serve` allows one client (issue 10 points 5 and 6): the
//! `[server]` limits, who a client is (its address, believed from
//! `X-Forwarded-For` only through `trusted-proxies`), which pages may connect
//! (`allowed-origins`), the per-connection message budget, and wrong tokens
//! answered ever more slowly per address. The server hooks these in; the
//! rules live here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::config::ServerConfig;
use crate::util::lock_ignoring_poison;

/// Defaults of the `[server]` limit keys (documented in roomcam.example.toml).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_MESSAGES_PER_SECOND: u32 = 50;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 4;
pub const DEFAULT_MAX_ROOM_NAME_LENGTH: usize = 64;
pub const DEFAULT_ROOM_NAME_CHARACTERS: &str = "-_.~";

/// A connection may send this many seconds' worth of messages at once: a
/// viewer's offer and its burst of candidates come together.
const BURST_SECONDS: u32 = 4;
/// Wrong tokens from one address answered at once; after them each check waits.
const FREE_TOKEN_FAILURES: u32 = 3;
const FIRST_TOKEN_DELAY: Duration = Duration::from_secs(1);
const MAX_TOKEN_DELAY: Duration = Duration::from_secs(30);
/// An address's failures are forgotten this long after its last one.
const TOKEN_FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// Addresses remembered for their failures at most (an attacker with many
/// addresses must not grow the table without bound).
const MAX_REMEMBERED_ADDRESSES: usize = 10_000;

/// A configured limit that cannot work: the key and why.
pub fn config_conflict(config: &ServerConfig) -> Option<(&'static str, String)> {
    if !(1024..=16 * 1024 * 1024).contains(&config.max_message_bytes) {
        return Some((
            "max-message-bytes",
            format!("server.max-message-bytes {} must be 1024..16777216", config.max_message_bytes),
        ));
    }
    if !(1..=100_000).contains(&config.max_messages_per_second) {
        return Some((
            "max-messages-per-second",
            format!("server.max-messages-per-second {} must be 1..100000", config.max_messages_per_second),
        ));
    }
    if config.max_connections_per_address == 0 {
        return Some(("max-connections-per-address", "server.max-connections-per-address must be at least 1".into()));
    }
    if config.max_rooms_per_connection == 0 {
        return Some(("max-rooms-per-connection", "server.max-rooms-per-connection must be at least 1".into()));
    }
    if !(1..=1024).contains(&config.max_room_name_length) {
        return Some((
            "max-room-name-length",
            format!("server.max-room-name-length {} must be 1..1024", config.max_room_name_length),
        ));
    }
    if let Some(bad) = config.room_name_characters.chars().find(|c| c.is_alphanumeric() || c.is_control()) {
        return Some((
            "room-name-characters",
            format!(
                "server.room-name-characters lists the extra characters besides letters and digits: {bad:?} is not one"
            ),
        ));
    }
    if let Some(bad) = config.trusted_proxies.iter().find(|p| p.parse::<AddressRange>().is_err()) {
        return Some((
            "trusted-proxies",
            format!("server.trusted-proxies: {bad:?} is not an address or a range like 10.0.0.0/8"),
        ));
    }
    if let Some(bad) = config.allowed_origins.iter().flatten().find(|o| normalized_origin(o).is_none()) {
        return Some((
            "allowed-origins",
            format!("server.allowed-origins: {bad:?} is not an origin like \"https://cam.example.org\""),
        ));
    }
    for room in &config.rooms {
        if let Err(why) = room_name_rules(config).check(&room.name) {
            return Some(("rooms", format!("server.rooms {:?}: {why}", room.name)));
        }
    }
    None
}

/// An address or a CIDR range (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for AddressRange {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| ())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| ())?,
            None => bits,
        };
        if prefix > bits {
            return Err(());
        }
        Ok(AddressRange { network: network.to_canonical(), prefix })
    }
}

impl AddressRange {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_matches(&net.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_matches(&net.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_matches(network: &[u8], address: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    network[..full] == address[..full] && (rest == 0 || (network[full] ^ address[full]) & (0xff_u8 << (8 - rest)) == 0)
}

/// The peer of an accepted connection, as the listener saw it; the server
/// puts it in each request's extensions (`ConnectInfo<PeerAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::signaling::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::signaling::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Room names the server accepts: `max-room-name-length` characters of
/// letters, digits and `room-name-characters`.
pub struct RoomNameRules {
    max_length: usize,
    extra: String,
}

fn room_name_rules(config: &ServerConfig) -> RoomNameRules {
    RoomNameRules { max_length: config.max_room_name_length, extra: config.room_name_characters.clone() }
}

impl RoomNameRules {
    /// Why `name` is refused, if it is.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let length = name.chars().count();
        if length == 0 || length > self.max_length {
            return Err(format!("a room name has 1 to {} characters (max-room-name-length)", self.max_length));
        }
        match name.chars().find(|c| !c.is_alphanumeric() && !self.extra.contains(*c)) {
            Some(c) => Err(format!("character {c:?} is not allowed in a room name (room-name-characters)")),
            None => Ok(()),
        }
    }
}

/// The server's limits and the state they need across connections.
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_messages_per_second: u32,
    pub max_connections_per_address: usize,
    pub max_rooms_per_connection: usize,
    pub room_names: RoomNameRules,
    trusted_proxies: Vec<AddressRange>,
    /// Lowercase `scheme://host[:port]`; `None`: any origin.
    allowed_origins: Option<Vec<String>>,
    connections: Mutex<HashMap<IpAddr, usize>>,
    token_failures: Mutex<HashMap<IpAddr, TokenFailures>>,
}

struct TokenFailures {
    count: u32,
    last: Instant,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Limits {
        Limits {
            max_message_bytes: config.max_message_bytes,
            max_messages_per_second: config.max_messages_per_second,
            max_connections_per_address: config.max_connections_per_address,
            max_rooms_per_connection: config.max_rooms_per_connection,
            room_names: room_name_rules(config),
            // Validated with the config; a range that does not parse trusts no one.
            trusted_proxies: config.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect(),
            allowed_origins: config
                .allowed_origins
                .as_ref()
                .map(|origins| origins.iter().filter_map(|o| normalized_origin(o)).collect()),
            connections: Mutex::new(HashMap::new()),
            token_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy,
    /// the nearest address in `X-Forwarded-For` that is not one.
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?.ip().to_canonical();
        if !self.is_trusted_proxy(client) {
            return Some(client);
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in forwarded.iter().rev() {
            let Ok(address) = hop.trim().parse::<IpAddr>() else { break };
            client = address.to_canonical();
            if !self.is_trusted_proxy(client) {
                break;
            }
        }
        Some(client)
    }

    fn is_trusted_proxy(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(address))
    }

    /// Why a request from a page of another site is refused, if it is. A
    /// request without `Origin` is no page's (the device, a script) and
    /// passes; the server's own origin always passes.
    pub fn origin_refusal(&self, headers: &HeaderMap) -> Option<String> {
        let allowed = self.allowed_origins.as_ref()?;
        let origin = headers.get(header::ORIGIN)?;
        let Some(origin) = origin.to_str().ok().and_then(normalized_origin) else {
            return Some("an unreadable Origin".into());
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        let same_origin = host.is_some_and(|host| origin.split_once("://").is_some_and(|(_, o)| o == host));
        (!same_origin && !allowed.contains(&origin)).then(|| format!("origin {origin} is not in allowed-origins"))
    }

    /// Counts a new connection from `address`; false (and nothing counted)
    /// when the address already has its `max-connections-per-address`.
    pub fn admit_connection(&self, address: IpAddr) -> bool {
        let mut connections = lock_ignoring_poison(&self.connections);
        let count = connections.entry(address).or_default();
        if *count >= self.max_connections_per_address {
            return false;
        }
        *count += 1;
        true
    }

    /// Whether `address` already has its `max-connections-per-address`.
    pub fn connections_full(&self, address: IpAddr) -> bool {
        lock_ignoring_poison(&self.connections).get(&address).is_some_and(|c| *c >= self.max_connections_per_address)
    }

    pub fn release_connection(&self, address: IpAddr) {
        let mut connections = lock_ignoring_poison(&self.connections);
        if let Some(count) = connections.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                connections.remove(&address);
            }
        }
    }

    /// How long to wait before checking a token from `address`: nothing for
    /// its first few failures, then doubling with each. Right tokens wait
    /// too: answering them at once would tell a guesser that every slow
    /// answer is a wrong one.
    pub fn token_delay(&self, address: IpAddr) -> Duration {
        let failures = lock_ignoring_poison(&self.token_failures);
        let count = failures.get(&address).filter(|f| f.last.elapsed() < TOKEN_FAILURE_MEMORY).map_or(0, |f| f.count);
        match count.checked_sub(FREE_TOKEN_FAILURES) {
            None => Duration::ZERO,
            Some(extra) => FIRST_TOKEN_DELAY.saturating_mul(1 << extra.min(16)).min(MAX_TOKEN_DELAY),
        }
    }

    /// Records a wrong or missing token from `address`; returns how many it
    /// has had lately.
    pub fn token_failed(&self, address: IpAddr) -> u32 {
        let mut failures = lock_ignoring_poison(&self.token_failures);
        if failures.len() >= MAX_REMEMBERED_ADDRESSES {
            failures.retain(|_, f| f.last.elapsed() < TOKEN_FAILURE_MEMORY);
        }
        if failures.len() >= MAX_REMEMBERED_ADDRESSES && !failures.contains_key(&address) {
            // Full of recent failures: forget the oldest rather than grow.
            if let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a) {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(address).or_insert(TokenFailures { count: 0, last: Instant::now() });
        if entry.last.elapsed() >= TOKEN_FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = Instant::now();
        entry.count
    }

    pub fn message_budget(&self) -> TokenBucket {
        TokenBucket::new(self.max_messages_per_second)
    }
}

/// `scheme://host[:port]`, lowercase, without a default port or a path;
/// `None` if `text` is no http(s) origin.
fn normalized_origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.path().len() > 1 {
        return None;
    }
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// Whether the token a client gave is the room's, in time independent of
/// where they differ (and of their lengths: both are hashed first).
pub fn tokens_match(given: Option<&str>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    let given = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let expected = ring::digest::digest(&ring::digest::SHA256, expected.as_bytes());
    given.as_ref().ct_eq(expected.as_ref()).into()
}

/// A connection's message budget: `rate` messages a second, and a burst of
/// [`BURST_SECONDS`] seconds' worth.
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> TokenBucket {
        let capacity = f64::from(rate.saturating_mul(BURST_SECONDS));
        TokenBucket { rate: f64::from(rate), capacity, tokens: capacity, last: Instant::now() }
    }

    /// Takes one message from the budget; false when it is spent.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(edit: impl FnOnce(&mut ServerConfig)) -> Limits {
        let mut config = ServerConfig::default();
        edit(&mut config);
        assert_eq!(config_conflict(&config), None);
        Limits::new(&config)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn ranges() {
        let lan: AddressRange = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains("10.200.3.4".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        assert!(lan.contains("::ffff:10.1.1.1".parse().unwrap()));
        let odd: AddressRange = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.1.100".parse().unwrap()));
        let one: AddressRange = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()) && !one.contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err());
        assert!("proxy.local".parse::<AddressRange>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.2")]);
        let untrusting = limits(|_| {});
        assert_eq!(untrusting.client_address(Some(peer), &forwarded), Some("127.0.0.1".parse().unwrap()));
        let trusting = limits(|c| c.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()]);
        assert_eq!(trusting.client_address(Some(peer), &forwarded), Some("198.51.100.7".parse().unwrap()));
        // A client's own X-Forwarded-For is left of what the proxies add: a
        // forged entry there is not believed past the first untrusted hop.
        let forged = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(trusting.client_address(Some(peer), &forged), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(trusting.client_address(Some(peer), &HeaderMap::new()), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn origins() {
        let any = limits(|_| {});
        assert_eq!(any.origin_refusal(&headers(&[("origin", "https://evil.example")])), None);
        let only = limits(|c| c.allowed_origins = Some(vec!["https://Cam.example.org/".into()]));
        assert_eq!(only.origin_refusal(&headers(&[("origin", "https://cam.example.org")])), None);
        assert!(only.origin_refusal(&headers(&[("origin", "https://evil.example")])).is_some());
        assert_eq!(only.origin_refusal(&HeaderMap::new()), None, "the device sends no Origin");
        let own = headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]);
        assert_eq!(only.origin_refusal(&own), None, "the server's own page");
    }

    #[test]
    fn connections_per_address() {
        let limits = limits(|c| c.max_connections_per_address = 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.admit_connection(a) && limits.admit_connection(a));
        assert!(!limits.admit_connection(a) && limits.connections_full(a));
        assert!(limits.admit_connection("192.0.2.2".parse().unwrap()));
        limits.release_connection(a);
        assert!(limits.admit_connection(a));
    }

    #[test]
    fn token_failures_slow_down_after_the_free_ones() {
        let limits = limits(|_| {});
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_TOKEN_FAILURES {
            assert_eq!(limits.token_delay(a), Duration::ZERO);
            limits.token_failed(a);
        }
        assert_eq!(limits.token_delay(a), FIRST_TOKEN_DELAY);
        limits.token_failed(a);
        assert_eq!(limits.token_delay(a), FIRST_TOKEN_DELAY * 2);
        for _ in 0..20 {
            limits.token_failed(a);
        }
        assert_eq!(limits.token_delay(a), MAX_TOKEN_DELAY);
        assert_eq!(limits.token_delay("192.0.2.2".parse().unwrap()), Duration::ZERO);
    }

    #[test]
    fn tokens_compare_by_value() {
        assert!(tokens_match(Some("s3cret"), "s3cret"));
        assert!(!tokens_match(Some("s3cre"), "s3cret"));
        assert!(!tokens_match(None, "s3cret"));
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10);
        let burst = (0..100).take_while(|_| bucket.take_at(start)).count();
        assert_eq!(burst, 10 * BURST_SECONDS as usize);
        assert!(bucket.take_at(start + Duration::from_millis(150)));
        assert!(!bucket.take_at(start + Duration::from_millis(150)));
    }

    #[test]
    fn limit_keys_parse_and_bad_values_point_at_their_key() {
        let parse = |text: &str| crate::config::Config::parse(text, std::path::Path::new("roomcam.toml"));
        let defaults = parse("").unwrap().server;
        assert_eq!(defaults.max_messages_per_second, DEFAULT_MAX_MESSAGES_PER_SECOND);
        assert_eq!((defaults.trusted_proxies.len(), defaults.allowed_origins), (0, None));
        let config = parse(
            "[server]\nmax-message-bytes = 4096\nmax-connections-per-address = 2\n\
             trusted-proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\nallowed-origins = [\"https://cam.example.org\"]\n",
        )
        .unwrap();
        assert_eq!((config.server.max_message_bytes, config.server.max_connections_per_address), (4096, 2));
        for (text, line, column) in [
            ("[server]\nlisten = \"127.0.0.1:1\"\nmax-messages-per-second = 0\n", 3, 1),
            ("[server]\n  trusted-proxies = [\"proxy\"]\n", 2, 3),
            ("[server]\nallowed-origins = [\"cam.example.org\"]\n", 2, 1),
            ("[server]\nroom-name-characters = \"ab\"\n", 2, 1),
        ] {
            match parse(text) {
                Err(crate::config::ConfigError::Syntax { line: l, column: c, .. }) => {
                    assert_eq!((l, c), (line, column), "{text}")
                }
                other => panic!("{text}: expected an error at {line}:{column}, got {other:?}"),
            }
        }
    }

    #[test]
    fn room_names() {
        let rules = RoomNameRules { max_length: 8, extra: "-_".into() };
        assert!(rules.check("nursery").is_ok() && rules.check("door-1").is_ok() && rules.check("кухня").is_ok());
        assert!(rules.check("").is_err() && rules.check("ninechars").is_err());
        assert!(rules.check("a b").is_err() && rules.check("a/b").is_err() && rules.check("a\u{0}").is_err());
    }
}
