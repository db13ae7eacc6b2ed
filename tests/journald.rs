//! Logging to journald, as under systemd: the real `roomcam run` with
//! `JOURNAL_STREAM` naming its stderr, and a stand-in journald listening on
//! `/run/systemd/journal/socket` in a private mount namespace (`unshare -m`,
//! tmpfs on /run, the test's socket bind-mounted there), so nothing on the
//! machine is touched. The datagrams are parsed as journald would (native
//! protocol, https://systemd.io/JOURNAL_NATIVE_PROTOCOL/) and the session's
//! lines must carry ROOM= and PEER= fields.
//!
//! As root it uses a plain mount namespace; otherwise a user namespace
//! (`unshare -r`) in which the test is root enough to mount. Where neither
//! works the test fails and says why: it never skips.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Member, Proc, free_port, roomcam_bin, roomcam_serve};
use roomcam::config::ProtocolChoice;

type Entry = BTreeMap<String, String>;

/// Parses one native-protocol datagram: `KEY=value\n`, or `KEY\n` + 64-bit
/// little-endian length + value + `\n` for values that may hold newlines.
fn parse_entry(mut data: &[u8]) -> Entry {
    let mut entry = Entry::new();
    while !data.is_empty() {
        let eol = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
        let line = &data[..eol];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            entry.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[(eol + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[eol + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            entry.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    entry
}

#[test]
fn native_protocol_parser() {
    let mut binary = b"MESSAGE\n".to_vec();
    binary.extend_from_slice(&5u64.to_le_bytes());
    binary.extend_from_slice(b"a\nb c\nROOM=x\n");
    let e = parse_entry(&binary);
    assert_eq!(e["MESSAGE"], "a\nb c");
    assert_eq!(e["ROOM"], "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lines_reach_journald_with_room_and_peer_fields() {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let namespace_flags: &[&str] = if is_root { &["-m"] } else { &["-r", "-m"] };
    let probe = Command::new("unshare").args(namespace_flags).args(["sh", "-c", "mount -t tmpfs tmpfs /mnt"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs a private mount namespace (`unshare {}` and a tmpfs mount) and cannot get one: {}\n\
             run it as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
            namespace_flags.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("this test needs `unshare` (util-linux): {e}"),
    }
    let dir = std::env::temp_dir().join(format!("roomcam-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = UnixDatagram::bind(dir.join("socket")).unwrap();
    let entries: Arc<Mutex<Vec<Entry>>> = Arc::default();
    let sink = entries.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf) {
            if n > 0 {
                sink.lock().unwrap().push(parse_entry(&buf[..n]));
            }
        }
    });

    let port = free_port();
    let _server = roomcam_serve(port, None);
    let url = format!("http://127.0.0.1:{port}");
    let script = r#"
        set -e
        mount -t tmpfs tmpfs /run
        mkdir -p /run/systemd/journal
        mount --bind "$JOURNAL_DIR" /run/systemd/journal
        # What systemd sets for a unit with StandardError=journal.
        export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"
        exec "$@"
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args(namespace_flags)
        .args(["--propagation", "private", "sh", "-c", script, "sh"])
        .arg(roomcam_bin())
        .args(["run", "--server", &url, "--room", "journal", "--camera", "test", "--microphone", "none"])
        .env("JOURNAL_DIR", &dir)
        .env("RUST_LOG", "info");
    let mut device = Proc::spawn("roomcam-run-journal", &mut cmd);

    let wait = |what: &str, pred: &dyn Fn(&Entry) -> bool| -> Entry {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = entries.lock().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no journal entry {what}; entries: {:#?}\nstderr: {:#?}",
                entries.lock().unwrap(),
                device.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let joined = wait("for joining", &|e| e.get("MESSAGE").is_some_and(|m| m.contains("waiting for a viewer")));
    assert_eq!(joined.get("ROOM").map(String::as_str), Some("journal"), "{joined:#?}");
    assert_eq!(joined.get("SYSLOG_IDENTIFIER").map(String::as_str), Some("roomcam"));
    assert_eq!(joined.get("PRIORITY").map(String::as_str), Some("5"), "info is journald's notice (5)");
    assert!(!joined.contains_key("PEER"), "no peer on a room line: {joined:#?}");

    // A member joins: the device's lines about it name the peer.
    let mut member = Member::connect(&url, ProtocolChoice::Auto);
    member.expect_connected().await;
    let id = member.join("journal").await;
    let offering = wait("for the new viewer", &|e| e.get("MESSAGE").is_some_and(|m| m.contains("viewer joined")));
    assert_eq!(offering.get("ROOM").map(String::as_str), Some("journal"), "{offering:#?}");
    assert_eq!(offering.get("PEER"), Some(&id), "{offering:#?}");
    member.close();

    // Everything went to the journal, nothing to stderr.
    assert!(
        device.lines().iter().all(|l| !l.contains("waiting for a viewer")),
        "log lines on stderr too: {:#?}",
        device.lines()
    );
    assert_eq!(device.terminate(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
