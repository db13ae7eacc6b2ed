//! Driving the viewer page in headless Chromium (tests/browser/check-viewer.mjs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Proc, repo_root};

/// `node check-viewer.mjs URL ARGS…`, inside the network namespace held by
/// process `netns_pid` when given. Fails (never skips) when Chromium or
/// playwright-core is missing.
pub fn check_viewer_command(netns_pid: Option<u32>, url: &str, args: &[&str]) -> Command {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed at /usr/bin/chromium (apt-get install chromium; scripts/test does it)"
    );
    assert!(
        repo_root().join("tests/classic/node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/classic` (scripts/test does it)"
    );
    let mut cmd = in_netns(netns_pid, "node");
    cmd.arg(repo_root().join("tests/browser/check-viewer.mjs")).arg(url).args(args);
    cmd
}

/// How a check-viewer run ended: whether the page did all it was asked,
/// its JSON report, and what the driver printed on stderr.
pub struct ViewerRun {
    pub ok: bool,
    pub report: serde_json::Value,
    pub stderr: String,
}

/// Runs `check-viewer.mjs URL ARGS` (in `netns_pid`'s namespace when given)
/// to its end; panics only when it printed no report at all.
pub fn run_check_viewer(netns_pid: Option<u32>, url: &str, args: &[&str]) -> ViewerRun {
    run_driver(&mut check_viewer_command(netns_pid, url, args), "check-viewer")
}

/// Runs a browser driver that ends by printing a JSON report with `"ok"`.
pub fn run_driver(command: &mut Command, name: &str) -> ViewerRun {
    let output = command.output().expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from {name}:\n{stdout}\n{stderr}"));
    ViewerRun { ok: output.status.success() && report["ok"] == true, report, stderr }
}

/// [`run_check_viewer`] that must succeed: its report, or a panic with the
/// report, the driver's stderr and `context()` (e.g. a device's log).
pub fn check_viewer_succeeds(
    netns_pid: Option<u32>,
    url: &str,
    args: &[&str],
    context: impl FnOnce() -> String,
) -> serde_json::Value {
    let run = run_check_viewer(netns_pid, url, args);
    assert!(run.ok, "viewer page failed: {}\n{}{}", run.report, run.stderr, context());
    run.report
}

/// `program`, run inside the network namespace of `netns_pid` when given.
pub fn in_netns(netns_pid: Option<u32>, program: &str) -> Command {
    match netns_pid {
        Some(pid) => {
            let mut cmd = Command::new("nsenter");
            cmd.args(["-t", &pid.to_string(), "-n", "--", program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// A file under target/browser-artifacts (screenshots, cue files), removed if it exists.
pub fn artifact(name: &str) -> PathBuf {
    let dir = repo_root().join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Waits for a cue file the page driver writes.
pub fn wait_for_file(path: &Path, page: &mut Proc, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(page.is_running(), "the page driver exited early:\n{}", page.lines().join("\n"));
        assert!(Instant::now() < deadline, "no {path:?} within {timeout:?}:\n{}", page.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
}
