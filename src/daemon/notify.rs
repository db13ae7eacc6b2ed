//! systemd's notify protocol (sd_notify(3)) without libsystemd: one unix
//! datagram per message to `$NOTIFY_SOCKET`.
//!
//! - `READY=1` once the devices are open and the device is in its room (or
//!   was answered by the server at all: a full room or a refused token is a
//!   running service with a STATUS that says why);
//! - `STATUS=` a human line whenever it changes;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, sent from the daemon's main
//!   loop and only while the capture thread keeps coming back from the
//!   camera (with a frame, or with an error it will retry), so a hung main
//!   loop or a capture thread stuck in a driver call both end in a restart
//!   by systemd, while a camera that is merely unplugged (the viewers get the
//!   "camera unavailable" picture) does not;
//! - `STOPPING=1` on shutdown.
//!
//! Without `$NOTIFY_SOCKET` everything here is a no-op, except that a camera
//! stall is still logged.

use std::ffi::OsStr;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::PipelineStats;
use crate::metrics::device::DeviceHealth;
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

/// Whether a counter still moves: it must change at least once every `stall_after`.
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

/// How the camera is doing, as the supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraHealth {
    Delivering,
    /// The capture thread keeps trying but gets no frame (unplugged, missing at boot).
    Unavailable,
    /// The capture thread has not come back from the camera for this long.
    Stuck(Duration),
}

/// The STATUS= line for a state of the device.
pub fn status_line(
    room: &str,
    state: &RoomState,
    viewers: usize,
    ever_connected: bool,
    camera: CameraHealth,
) -> String {
    let line = room_status(room, state, viewers, ever_connected);
    match camera {
        CameraHealth::Delivering => line,
        CameraHealth::Unavailable => format!("{line}; camera unavailable, retrying"),
        CameraHealth::Stuck(still) => format!(
            "camera stuck: the capture thread has not returned for {}s or more; watchdog pings stopped",
            still.as_secs()
        ),
    }
}

fn room_status(room: &str, state: &RoomState, viewers: usize, ever_connected: bool) -> String {
    let streaming = match viewers {
        1 => "streaming to 1 viewer".to_owned(),
        n => format!("streaming to {n} viewers"),
    };
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
    /// The capture thread's returns from the camera: stuck when these stop.
    capture: CaptureWatch,
    /// Frames: the camera is away when these stop but returns go on.
    frames: CaptureWatch,
    ready_sent: bool,
    ever_connected: bool,
    status: String,
    last_ping: Option<Instant>,
    stalled: bool,
    /// `/healthz`, told the same truth as the watchdog.
    health: Option<Arc<DeviceHealth>>,
}

impl Supervisor {
    pub fn new(notifier: Notifier, stats: PipelineStats, fps: u32, now: Instant) -> Supervisor {
        if let Some(every) = notifier.watchdog_interval() {
            log::info!("systemd: watchdog ping every {every:?} while the capture thread is alive");
        }
        let stall_after = CaptureWatch::stall_after_for_fps(fps);
        Supervisor {
            notifier,
            capture: CaptureWatch::new(stats.capture_returns, now, stall_after),
            frames: CaptureWatch::new(stats.frames_captured, now, stall_after),
            ready_sent: false,
            ever_connected: false,
            status: String::new(),
            last_ping: None,
            stalled: false,
            health: None,
        }
    }

    pub fn with_health(mut self, health: Arc<DeviceHealth>) -> Supervisor {
        self.health = Some(health);
        self
    }

    /// Call after every event the main loop handled.
    pub fn update(&mut self, session: &Session, stats: PipelineStats, now: Instant) {
        let stalled = self.capture.observe(stats.capture_returns, now);
        match (stalled, self.stalled) {
            (Some(still), false) => log::error!(
                "camera: the capture thread has not returned from the camera for {}s (a hung driver?); watchdog \
                 pings stopped (systemd restarts roomcam when it runs with WatchdogSec=)",
                still.as_secs()
            ),
            (None, true) => log::warn!("camera: the capture thread is back; watchdog pings resumed"),
            _ => {}
        }
        self.stalled = stalled.is_some();
        if let Some(health) = &self.health {
            health.update(stalled, now);
        }
        // Only the status says so: the pipeline already logs the camera's errors.
        let camera_away = self.frames.observe(stats.frames_captured, now).is_some();
        // The threshold, not the growing duration: one STATUS per stall.
        let camera = match stalled {
            Some(_) => CameraHealth::Stuck(self.capture.stall_after),
            None if camera_away => CameraHealth::Unavailable,
            None => CameraHealth::Delivering,
        };

        let state = session.room_state();
        let connected = matches!(state, RoomState::InRoom { .. } | RoomState::Refused { .. });
        self.ever_connected |= connected || *state == RoomState::Joining;
        let status = status_line(session.room(), state, session.connected_viewers(), self.ever_connected, camera);
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
        use CameraHealth::*;
        let room = RoomState::InRoom { my_id: "a".into() };
        assert_eq!(status_line("hall", &room, 0, true, Delivering), "waiting for a viewer in room hall");
        assert_eq!(status_line("hall", &room, 1, true, Delivering), "streaming to 1 viewer in room hall");
        assert_eq!(status_line("hall", &room, 3, true, Delivering), "streaming to 3 viewers in room hall");
        assert_eq!(
            status_line("hall", &RoomState::Offline, 0, false, Delivering),
            "connecting to the signaling server"
        );
        assert_eq!(
            status_line("hall", &RoomState::Offline, 0, true, Delivering),
            "reconnecting to the signaling server"
        );
        assert_eq!(
            status_line("hall", &RoomState::Offline, 1, true, Delivering),
            "streaming to 1 viewer in room hall; reconnecting to the signaling server"
        );
        assert_eq!(
            status_line("hall", &room, 1, true, Unavailable),
            "streaming to 1 viewer in room hall; camera unavailable, retrying"
        );
        assert!(
            status_line("hall", &room, 1, true, Stuck(Duration::from_secs(6)))
                .starts_with("camera stuck: the capture thread has not returned for 6s")
        );
    }

    /// A notify socket to listen on, as systemd does.
    struct Listener {
        dir: std::path::PathBuf,
        socket: UnixDatagram,
    }

    impl Listener {
        fn bind(name: &str) -> Listener {
            let dir = std::env::temp_dir().join(format!("roomcam-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("notify");
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_nonblocking(true).unwrap();
            Listener { dir, socket }
        }

        fn notifier(&self, watchdog_usec: &str) -> Notifier {
            Notifier::from_vars(Some(self.dir.join("notify").as_os_str()), Some(watchdog_usec), None, 1)
        }

        fn recv_all(&self) -> Vec<String> {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.socket.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            out
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn stats(capture_returns: u64, frames_captured: u64) -> PipelineStats {
        PipelineStats { capture_returns, frames_captured, ..PipelineStats::default() }
    }

    /// The supervisor against a real datagram socket, with time passed in.
    #[test]
    fn supervisor_sends_ready_status_watchdog_and_stops_pinging_when_capture_is_stuck() {
        let listener = Listener::bind("notify-unit");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sup = Supervisor::new(listener.notifier("2000000"), stats(0, 0), 25, t0);
        let mut session = Session::new(SessionSettings::new("hall"));

        sup.update(&session, stats(1, 1), at(0));
        assert_eq!(listener.recv_all(), ["STATUS=connecting to the signaling server\nWATCHDOG=1"]);
        session.handle(crate::session::Event::SignalingConnected, at(100));
        sup.update(&session, stats(2, 2), at(100));
        assert_eq!(listener.recv_all(), ["STATUS=joining room hall"], "not ready before the room answers");
        session.handle(
            crate::session::Event::Room(crate::signaling::protocol::RoomEvent::Joined {
                room: "hall".into(),
                id: "me".into(),
            }),
            at(200),
        );
        sup.update(&session, stats(3, 3), at(200));
        assert_eq!(listener.recv_all(), ["READY=1\nSTATUS=waiting for a viewer in room hall"]);
        sup.update(&session, stats(30, 30), at(1000));
        assert_eq!(listener.recv_all(), ["WATCHDOG=1"], "a ping every half WATCHDOG_USEC");
        sup.update(&session, stats(31, 31), at(1500));
        assert!(listener.recv_all().is_empty(), "nothing changed, no ping due");
        // The capture thread goes into the driver at 31 and never comes
        // back: pings go on until that is noticed (5 s), then stop for good.
        sup.update(&session, stats(31, 31), at(2000));
        assert_eq!(listener.recv_all(), ["WATCHDOG=1"]);
        sup.update(&session, stats(31, 31), at(6500));
        let sent = listener.recv_all();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].starts_with("STATUS=camera stuck: the capture thread has not returned for 5s"), "{sent:?}");
        assert!(!sent[0].contains("WATCHDOG"), "{sent:?}");
        sup.update(&session, stats(31, 31), at(9000));
        sup.update(&session, stats(31, 31), at(12000));
        assert!(listener.recv_all().iter().all(|m| !m.contains("WATCHDOG=1")));
        sup.stopping();
        assert_eq!(listener.recv_all(), ["STOPPING=1\nSTATUS=stopping"]);
    }

    #[test]
    fn an_unplugged_camera_keeps_the_watchdog_fed_and_says_so() {
        let listener = Listener::bind("notify-unplugged");
        let t0 = Instant::now();
        let mut sup = Supervisor::new(listener.notifier("2000000"), stats(0, 0), 25, t0);
        let mut session = Session::new(SessionSettings::new("hall"));
        session.handle(crate::session::Event::SignalingConnected, t0);
        let joined = crate::signaling::protocol::RoomEvent::Joined { room: "hall".into(), id: "me".into() };
        session.handle(crate::session::Event::Room(joined), t0);
        // 100 frames, then a minute of errors retried every 500 ms: returns
        // keep coming, frames do not.
        let mut pings = Vec::new();
        let mut statuses = Vec::new();
        for tick in 0..=240u64 {
            let now = t0 + Duration::from_millis(tick * 250);
            let frames = (tick * 6).min(100);
            let returns = if frames < 100 { frames } else { 100 + tick / 2 };
            sup.update(&session, stats(returns, frames), now);
            for message in listener.recv_all() {
                for line in message.lines() {
                    if line == "WATCHDOG=1" {
                        pings.push(now);
                    } else if let Some(status) = line.strip_prefix("STATUS=") {
                        statuses.push(status.to_owned());
                    }
                }
            }
        }
        let gaps = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gaps <= Duration::from_secs(1), "longest gap between pings over a minute: {gaps:?}");
        assert!(pings.len() >= 59, "{} pings in 60 s", pings.len());
        assert_eq!(
            statuses,
            ["waiting for a viewer in room hall", "waiting for a viewer in room hall; camera unavailable, retrying"]
        );
    }
}
