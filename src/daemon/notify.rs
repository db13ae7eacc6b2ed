//! systemd's notify protocol (sd_notify(3)) without libsystemd: one unix
//! datagram per message to `$NOTIFY_SOCKET`.
//!
//! - `READY=1` once the devices are open and the device is in its room (or
//!   was answered by the server at all: a full room or a refused token is a
//!   running service with a STATUS that says why);
//! - `STATUS=` a human line whenever it changes;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, sent from the daemon's main
//!   loop and only while the camera keeps delivering frames, so a hung main
//!   loop or a hung capture thread both end in a restart by systemd;
//! - `STOPPING=1` on shutdown.
//!
//! Without `$NOTIFY_SOCKET` everything here is a no-op, except that a camera
//! stall is still logged.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use crate::media::{CameraFrame, KeyframeRequest, MediaError, VideoSource};
use crate::session::{RoomState, Session};

/// Where to send notifications, and how often systemd wants to hear from us.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// `$WATCHDOG_USEC`, when it is meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_vars(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id())
    }

    pub fn from_vars(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> Notifier {
        let target = socket.and_then(|path| match notify_address(path) {
            Ok(addr) => match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, addr)),
                Err(e) => {
                    log::warn!("systemd: cannot create the notify socket: {e}");
                    None
                }
            },
            Err(e) => {
                log::warn!("systemd: NOTIFY_SOCKET {path:?}: {e}; not notifying");
                None
            }
        });
        // WATCHDOG_PID names the process meant, when set (a child inheriting
        // the variables must not ping for its parent).
        let for_us = watchdog_pid.is_none_or(|pid| pid.trim().parse::<u32>().ok() == Some(my_pid));
        let watchdog = watchdog_usec
            .filter(|_| for_us)
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    pub fn disabled() -> Notifier {
        Notifier { target: None, watchdog: None }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the timeout, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// Sends `state` (newline-separated assignments). Failures are logged at
    /// debug only: systemd being gone is no reason to stop streaming.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            log::debug!("systemd: notify {state:?}: {e}");
        }
    }
}

fn notify_address(path: &OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(path),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "only absolute paths and @abstract names are supported",
        )),
    }
}

/// Whether the camera still delivers: the capture counter must move at
/// least once every `stall_after`.
pub struct CaptureWatch {
    last_count: u64,
    last_change: Instant,
    stall_after: Duration,
}

impl CaptureWatch {
    /// A few seconds, and never less than ten frame intervals.
    pub fn stall_after_for_fps(fps: u32) -> Duration {
        let ten_frames = Duration::from_secs(10) / fps.max(1);
        Duration::from_secs(5).max(ten_frames)
    }

    pub fn new(count: u64, now: Instant, stall_after: Duration) -> CaptureWatch {
        CaptureWatch { last_count: count, last_change: now, stall_after }
    }

    /// Records the counter; `None` while healthy, else how long it has been still.
    pub fn observe(&mut self, count: u64, now: Instant) -> Option<Duration> {
        if count != self.last_count {
            self.last_count = count;
            self.last_change = now;
        }
        let still = now.saturating_duration_since(self.last_change);
        (still >= self.stall_after).then_some(still)
    }
}

/// The STATUS= line for a state of the device; `stalled` is the stall threshold when the camera stalled.
pub fn status_line(
    room: &str,
    state: &RoomState,
    viewers: usize,
    ever_connected: bool,
    stalled: Option<Duration>,
) -> String {
    let streaming = match viewers {
        1 => "streaming to 1 viewer".to_owned(),
        n => format!("streaming to {n} viewers"),
    };
    if let Some(still) = stalled {
        return format!("camera stalled: no frame for {}s or more; watchdog pings stopped", still.as_secs());
    }
    match state {
        RoomState::Offline if viewers > 0 => {
            format!("{streaming} in room {room}; reconnecting to the signaling server")
        }
        RoomState::Offline if ever_connected => "reconnecting to the signaling server".to_owned(),
        RoomState::Offline => "connecting to the signaling server".to_owned(),
        RoomState::Joining => format!("joining room {room}"),
        RoomState::InRoom { .. } if viewers == 0 => format!("waiting for a viewer in room {room}"),
        RoomState::InRoom { .. } => format!("{streaming} in room {room}"),
        RoomState::Refused { .. } => format!("not admitted to room {room} (full, or token refused); trying again"),
        RoomState::Stopped => "stopping".to_owned(),
    }
}

/// Drives the notifications from the daemon's main loop.
pub struct Supervisor {
    notifier: Notifier,
    capture: CaptureWatch,
    ready_sent: bool,
    ever_connected: bool,
    status: String,
    last_ping: Option<Instant>,
    stalled: bool,
}

impl Supervisor {
    pub fn new(notifier: Notifier, frames_captured: u64, fps: u32, now: Instant) -> Supervisor {
        if let Some(every) = notifier.watchdog_interval() {
            log::info!("systemd: watchdog ping every {every:?} while the camera delivers");
        }
        Supervisor {
            notifier,
            capture: CaptureWatch::new(frames_captured, now, CaptureWatch::stall_after_for_fps(fps)),
            ready_sent: false,
            ever_connected: false,
            status: String::new(),
            last_ping: None,
            stalled: false,
        }
    }

    /// Call after every event the main loop handled.
    pub fn update(&mut self, session: &Session, frames_captured: u64, now: Instant) {
        let stalled = self.capture.observe(frames_captured, now);
        match (stalled, self.stalled) {
            (Some(still), false) => log::error!(
                "camera: no frame for {}s; watchdog pings stopped (systemd restarts roomcam when it runs with WatchdogSec=)",
                still.as_secs()
            ),
            (None, true) => log::warn!("camera: delivering frames again; watchdog pings resumed"),
            _ => {}
        }
        self.stalled = stalled.is_some();

        let state = session.room_state();
        let connected = matches!(state, RoomState::InRoom { .. } | RoomState::Refused { .. });
        self.ever_connected |= connected || *state == RoomState::Joining;
        // The threshold, not the growing duration: one STATUS per stall.
        let stall = stalled.map(|_| self.capture.stall_after);
        let status = status_line(session.room(), state, session.connected_viewers(), self.ever_connected, stall);
        let mut message = String::new();
        if connected && !self.ready_sent {
            self.ready_sent = true;
            message.push_str("READY=1\n");
        }
        if status != self.status {
            message.push_str(&format!("STATUS={status}\n"));
            self.status = status;
        }
        if let Some(every) = self.notifier.watchdog_interval()
            && stalled.is_none()
            && self.last_ping.is_none_or(|last| now.saturating_duration_since(last) >= every)
        {
            self.last_ping = Some(now);
            message.push_str("WATCHDOG=1\n");
        }
        if !message.is_empty() {
            self.notifier.send(message.trim_end());
        }
    }

    pub fn stopping(&mut self) {
        self.status = "stopping".to_owned();
        self.notifier.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// Fault injection for the watchdog test: with
/// `ROOMCAM_TEST_CAMERA_STALL_AFTER=N` the camera hangs for good after N
/// frames, as a wedged V4L2 driver would.
pub fn maybe_stall_camera(camera: Box<dyn VideoSource>) -> Box<dyn VideoSource> {
    match std::env::var("ROOMCAM_TEST_CAMERA_STALL_AFTER").ok().and_then(|n| n.parse::<u64>().ok()) {
        Some(after) => {
            log::warn!("camera: will hang after {after} frames (ROOMCAM_TEST_CAMERA_STALL_AFTER)");
            Box::new(StallingCamera { inner: camera, left: after })
        }
        None => camera,
    }
}

struct StallingCamera {
    inner: Box<dyn VideoSource>,
    left: u64,
}

impl VideoSource for StallingCamera {
    fn next_frame(&mut self) -> Result<CameraFrame, MediaError> {
        if self.left == 0 {
            loop {
                std::thread::park();
            }
        }
        self.left -= 1;
        self.inner.next_frame()
    }

    fn request_keyframe(&mut self) -> KeyframeRequest {
        self.inner.request_keyframe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionSettings;

    #[test]
    fn addresses_and_watchdog_variables() {
        let n = Notifier::from_vars(Some(OsStr::new("/run/x/notify")), Some("20000000"), None, 7);
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(10)));
        let n = Notifier::from_vars(Some(OsStr::new("@abstract")), Some("20000000"), Some("8"), 7);
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), None, "WATCHDOG_PID names another process");
        let n = Notifier::from_vars(Some(OsStr::new("@abstract")), Some("2000000"), Some("7"), 7);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        let n = Notifier::from_vars(Some(OsStr::new("relative")), Some("1000000"), None, 7);
        assert!(!n.enabled());
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::from_vars(None, Some("1000000"), None, 7);
        assert_eq!(n.watchdog_interval(), None, "no socket, nobody to ping");
        n.send("READY=1"); // a no-op, never a panic
    }

    #[test]
    fn capture_watch_needs_the_counter_to_move() {
        let t0 = Instant::now();
        let mut w = CaptureWatch::new(10, t0, Duration::from_secs(5));
        assert_eq!(w.observe(10, t0 + Duration::from_secs(4)), None);
        assert_eq!(w.observe(11, t0 + Duration::from_secs(6)), None, "moved: healthy");
        assert_eq!(w.observe(11, t0 + Duration::from_secs(10)), None);
        assert_eq!(w.observe(11, t0 + Duration::from_secs(11)), Some(Duration::from_secs(5)));
        assert_eq!(w.observe(12, t0 + Duration::from_secs(12)), None, "recovers");
        assert_eq!(CaptureWatch::stall_after_for_fps(25), Duration::from_secs(5));
        assert_eq!(CaptureWatch::stall_after_for_fps(1), Duration::from_secs(10));
        assert_eq!(CaptureWatch::stall_after_for_fps(0), Duration::from_secs(10));
    }

    #[test]
    fn status_lines() {
        let room = RoomState::InRoom { my_id: "a".into() };
        assert_eq!(status_line("hall", &room, 0, true, None), "waiting for a viewer in room hall");
        assert_eq!(status_line("hall", &room, 1, true, None), "streaming to 1 viewer in room hall");
        assert_eq!(status_line("hall", &room, 3, true, None), "streaming to 3 viewers in room hall");
        assert_eq!(status_line("hall", &RoomState::Offline, 0, false, None), "connecting to the signaling server");
        assert_eq!(status_line("hall", &RoomState::Offline, 0, true, None), "reconnecting to the signaling server");
        assert_eq!(
            status_line("hall", &RoomState::Offline, 1, true, None),
            "streaming to 1 viewer in room hall; reconnecting to the signaling server"
        );
        assert!(
            status_line("hall", &room, 1, true, Some(Duration::from_secs(6)))
                .starts_with("camera stalled: no frame for 6s")
        );
    }

    /// The supervisor against a real datagram socket, with time passed in.
    #[test]
    fn supervisor_sends_ready_status_watchdog_and_stops_pinging_on_a_stall() {
        let dir = std::env::temp_dir().join(format!("roomcam-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let recv_all = || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = listener.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            out
        };
        let notifier = Notifier::from_vars(Some(path.as_os_str()), Some("2000000"), None, 1);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sup = Supervisor::new(notifier, 0, 25, t0);
        let mut session = Session::new(SessionSettings::new("hall"));

        sup.update(&session, 1, at(0));
        assert_eq!(recv_all(), ["STATUS=connecting to the signaling server\nWATCHDOG=1"]);
        session.handle(crate::session::Event::SignalingConnected, at(100));
        sup.update(&session, 2, at(100));
        assert_eq!(recv_all(), ["STATUS=joining room hall"], "not ready before the room answers");
        session.handle(
            crate::session::Event::Room(crate::signaling::protocol::RoomEvent::Joined {
                room: "hall".into(),
                id: "me".into(),
            }),
            at(200),
        );
        sup.update(&session, 3, at(200));
        assert_eq!(recv_all(), ["READY=1\nSTATUS=waiting for a viewer in room hall"]);
        sup.update(&session, 30, at(1000));
        assert_eq!(recv_all(), ["WATCHDOG=1"], "a ping every half WATCHDOG_USEC");
        sup.update(&session, 31, at(1500));
        assert!(recv_all().is_empty(), "nothing changed, no ping due");
        // The camera stops at 31 frames: pings go on until the stall is
        // noticed (5 s), then stop for good.
        sup.update(&session, 31, at(2000));
        assert_eq!(recv_all(), ["WATCHDOG=1"]);
        sup.update(&session, 31, at(6500));
        let sent = recv_all();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].starts_with("STATUS=camera stalled: no frame for 5s"), "{sent:?}");
        assert!(!sent[0].contains("WATCHDOG"), "{sent:?}");
        sup.update(&session, 31, at(9000));
        sup.update(&session, 31, at(12000));
        assert!(recv_all().iter().all(|m| !m.contains("WATCHDOG=1")));
        sup.stopping();
        assert_eq!(recv_all(), ["STOPPING=1\nSTATUS=stopping"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
