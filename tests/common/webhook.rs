//! An HTTP receiver on loopback for webhook tests: it records every POST
//! and answers 500 to the first few, 204 to the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::Proc;

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct Post {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Post {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// An HTTP receiver on loopback that answers 500 to its first `failures`
/// requests and 204 to the rest.
pub struct Receiver {
    pub url: String,
    pub posts: Arc<Mutex<Vec<Post>>>,
}

pub fn receiver(failures: usize) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/roomcam/alerts", listener.local_addr().unwrap().port());
    let posts = Arc::new(Mutex::new(Vec::new()));
    let recorded = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(post) = read_post(&mut stream) else { continue };
            let n = {
                let mut posts = recorded.lock().unwrap();
                posts.push(post);
                posts.len()
            };
            let status = if n <= failures { "500 Internal Server Error" } else { "204 No Content" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    Receiver { url, posts }
}

fn read_post(stream: &mut std::net::TcpStream) -> Option<Post> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut request = line.split_whitespace();
    assert_eq!(request.next(), Some("POST"), "{line}");
    let path = request.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Post { path, headers, body: String::from_utf8(body).ok()? })
}

impl Receiver {
    pub fn wait_for(&self, n: usize, timeout: Duration, device: &Proc) -> Vec<Post> {
        let deadline = Instant::now() + timeout;
        loop {
            let posts = self.posts.lock().unwrap().clone();
            if posts.len() >= n {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} POSTs within {timeout:?}:\n{}",
                posts.len(),
                device.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `at` is RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`) and about now.
pub fn assert_recent_rfc3339(at: &str) {
    let b = at.as_bytes();
    assert!(at.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' && at.ends_with('Z'), "{at}");
    let output = Command::new("date").args(["-u", "-d", at, "+%s"]).output().unwrap();
    let seconds: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or_else(|e| panic!("{at}: {e}"));
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(seconds) < 120, "{at} is not about now");
}
