//! libcamera cameras (the Pi's CSI camera modules: v2, v3, NoIR, HQ)
//! through libcamera's own V4L2 compatibility layer, `v4l2-compat.so`
//! (Debian and Raspberry Pi OS package `libcamera-v4l2`, the library
//! `libcamerify` preloads), under roomcam's existing V4L2 path.
//!
//! Why this route and not linking libcamera: Debian 12 ships libcamera
//! 0.0.3, Raspberry Pi OS 0.5.x, and libcamera has no stable ABI, so a
//! linked build would run on one of them only; the compatibility layer is
//! built with the libcamera it sits on, and its V4L2 face is stable. It
//! gives mmap streaming and formats, no controls and no VIDIOC_S_PARM (the
//! frame rate is the pipeline's own; [`super::v4l2::V4l2Camera`] drops
//! frames down to `camera.fps` then).
//!
//! The layer works by interposing `open`/`ioctl`/`mmap`, so it must be in
//! the process from the start: roomcam re-executes itself with it in
//! `LD_PRELOAD` (same pid, so systemd's notify and watchdog are unchanged)
//! only when the configured camera is a libcamera one. A USB camera is then
//! left to roomcam's own V4L2 code, not libcamera's uvcvideo handler. Under
//! the layer, a node libcamera drives answers VIDIOC_QUERYCAP with driver
//! `libcamera`, card = the camera id and bus `libcamera:<index>`.

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use v4l::Device;

use super::discovery::until_nul;
use crate::media::MediaError;
use crate::media::devices::video_nodes;

/// Set in the re-executed process to the library it preloads: tells it
/// apart from a process whose `LD_PRELOAD` did not take.
pub const COMPAT_ENV: &str = "ROOMCAM_LIBCAMERA_COMPAT";
/// Where to find `v4l2-compat.so` when it is not in a standard place.
pub const COMPAT_LIBRARY_ENV: &str = "ROOMCAM_LIBCAMERA_V4L2_COMPAT";
/// The hidden subcommand that lists cameras from inside the layer.
pub const PROBE_SUBCOMMAND: &str = "libcamera-cameras";
/// libcamera's start enumerates every media device; generous on a Zero.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// VIDIOC_QUERYCAP's card field: 32 bytes with the NUL, so longer camera
/// ids (`/base/soc/i2c0mux/i2c@1/imx708@1a`) arrive cut.
const CARD_LEN: usize = 31;

/// One camera libcamera drives, as seen through the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibcameraCamera {
    pub index: u32,
    /// The camera id (cut to 31 bytes by V4L2's card field).
    pub id: String,
    /// The node opening which gives this camera under the layer.
    pub node: PathBuf,
}

/// Where `v4l2-compat.so` is: `$ROOMCAM_LIBCAMERA_V4L2_COMPAT`, else the
/// path libcamera's own `libcamerify` script preloads, else the places
/// distributions put it (Debian: /usr/lib/TRIPLE/, upstream and Raspberry
/// Pi OS: …/libexec/…/libcamera/ or …/lib/…/libcamera/).
pub fn compat_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(COMPAT_LIBRARY_ENV) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let from_libcamerify = ["/usr/bin/libcamerify", "/usr/local/bin/libcamerify"]
        .iter()
        .filter_map(|script| std::fs::read_to_string(script).ok())
        .find_map(|text| libcamerify_library(&text));
    let mut candidates: Vec<PathBuf> = from_libcamerify.into_iter().collect();
    for base in ["/usr/lib", "/usr/libexec", "/usr/local/lib", "/usr/local/libexec"] {
        let base = Path::new(base);
        let mut dirs = vec![base.to_owned(), base.join("libcamera")];
        if let Ok(entries) = std::fs::read_dir(base) {
            let mut arch: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            arch.sort();
            for dir in arch {
                dirs.push(dir.join("libcamera"));
                dirs.push(dir);
            }
        }
        candidates.extend(dirs.into_iter().map(|d| d.join("v4l2-compat.so")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The library in a `libcamerify` script's `LD_PRELOAD='…/v4l2-compat.so'`.
fn libcamerify_library(script: &str) -> Option<PathBuf> {
    script.lines().filter(|l| l.contains("LD_PRELOAD")).find_map(|line| {
        let end = line.find("v4l2-compat.so")? + "v4l2-compat.so".len();
        let start = line[..end].rfind(['\'', '"', ' ', '='])? + 1;
        Some(PathBuf::from(&line[start..end]))
    })
}

/// Whether the layer is mapped into this process.
pub fn compat_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|maps| maps.contains("v4l2-compat.so"))
}

/// `LD_PRELOAD` with `library` first, keeping what was there.
fn preload_value(library: &Path, existing: Option<OsString>) -> OsString {
    let mut value = OsString::from(library);
    if let Some(existing) = existing.filter(|e| !e.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}

/// Re-executes this process (same arguments, same pid) with the layer
/// preloaded. Returns only on failure.
pub fn reexec_with_compat(library: &Path) -> MediaError {
    if std::env::var_os(COMPAT_ENV).is_some() {
        return MediaError::Device {
            device: "libcamera".into(),
            reason: format!(
                "{} was put in LD_PRELOAD but is not in the process (is it for this machine's architecture?)",
                library.display()
            ),
        };
    }
    log::info!("camera: restarting roomcam with libcamera's V4L2 layer ({})", library.display());
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "roomcam".into());
    let err = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env("LD_PRELOAD", preload_value(library, std::env::var_os("LD_PRELOAD")))
        .env(COMPAT_ENV, library)
        .exec();
    MediaError::Device { device: "libcamera".into(), reason: format!("re-executing with {}: {err}", library.display()) }
}

/// The cameras libcamera offers, from inside the layer (call only when
/// [`compat_loaded`]): every /dev/video* node it answers for, one per camera.
pub fn cameras_in_process(dev_dir: &Path) -> Vec<LibcameraCamera> {
    let mut out: Vec<LibcameraCamera> = Vec::new();
    for (node, _) in video_nodes(dev_dir) {
        // Every node's answer is logged: when libcamera claims none, the
        // drivers that answered instead say which nodes the layer let through.
        let caps = match Device::with_path(&node).and_then(|d| d.query_caps()) {
            Ok(caps) => caps,
            Err(e) => {
                log::debug!("libcamera: {}: {e}", node.display());
                continue;
            }
        };
        log::debug!(
            "libcamera: {}: driver {:?}, card {:?}, bus {:?}",
            node.display(),
            until_nul(&caps.driver),
            until_nul(&caps.card),
            until_nul(&caps.bus)
        );
        if until_nul(&caps.driver) != "libcamera" {
            continue;
        }
        let bus = until_nul(&caps.bus);
        let index = bus.strip_prefix("libcamera:").and_then(|i| i.parse().ok()).unwrap_or(u32::MAX);
        if !out.iter().any(|c| c.index == index) {
            out.push(LibcameraCamera { index, id: until_nul(&caps.card).to_owned(), node });
        }
    }
    out.sort_by_key(|c| c.index);
    out
}

/// One line per camera, for [`parse_probe`]: `camera\tINDEX\tNODE\tID`.
pub fn probe_lines(cameras: &[LibcameraCamera]) -> String {
    cameras.iter().map(|c| format!("camera\t{}\t{}\t{}\n", c.index, c.node.display(), c.id)).collect()
}

pub fn parse_probe(text: &str) -> Vec<LibcameraCamera> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(4, '\t');
            (f.next()? == "camera").then_some(())?;
            let index = f.next()?.parse().ok()?;
            let node = PathBuf::from(f.next()?);
            let id = f.next()?.to_owned();
            Some(LibcameraCamera { index, id, node })
        })
        .collect()
}

/// The camera `device = "libcamera"` (first) or `"libcamera:<id>"` means.
/// An id longer than V4L2's card field matches on the part that fits.
pub fn select<'a>(cameras: &'a [LibcameraCamera], wanted: Option<&str>) -> Result<&'a LibcameraCamera, String> {
    let found = match wanted {
        None => cameras.first(),
        Some(id) => cameras.iter().find(|c| {
            c.id == id || (id.len() > CARD_LEN && c.id.len() == CARD_LEN && id.as_bytes().starts_with(c.id.as_bytes()))
        }),
    };
    found.ok_or_else(|| {
        let ids: Vec<String> = cameras.iter().map(|c| format!("libcamera:{}", c.id)).collect();
        match (wanted, ids.is_empty()) {
            (_, true) => "libcamera finds no camera (is the camera module's cable seated, and \
                          camera_auto_detect=1 or its dtoverlay in /boot/firmware/config.txt?)"
                .to_string(),
            (Some(id), false) => format!("libcamera has no camera {id:?}; it has {}", ids.join(", ")),
            (None, false) => unreachable!("first() of a non-empty list"),
        }
    })
}

/// Lists the cameras from a child (this binary, [`PROBE_SUBCOMMAND`])
/// running under the layer, so that this process stays without it.
/// `describe`: the child's human report for `roomcam devices` instead.
pub fn probe(library: &Path, describe: bool) -> Result<String, MediaError> {
    let fail = |reason: String| MediaError::Device { device: "libcamera".into(), reason };
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(PROBE_SUBCOMMAND)
        .env("LD_PRELOAD", preload_value(library, std::env::var_os("LD_PRELOAD")))
        .env(COMPAT_ENV, library)
        // libcamera logs its start at INFO to stderr; only trouble matters here.
        .env("LIBCAMERA_LOG_LEVELS", std::env::var("LIBCAMERA_LOG_LEVELS").unwrap_or_else(|_| "*:ERROR".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if describe {
        cmd.arg("--describe");
    }
    let mut child = cmd.spawn().map_err(|e| fail(format!("starting the probe: {e}")))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("libcamera did not list its cameras within {PROBE_TIMEOUT:?}")));
            }
            Err(e) => return Err(fail(format!("waiting for the probe: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(fail(format!("the probe failed ({status}): {}", err.trim())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(index: u32, id: &str) -> LibcameraCamera {
        LibcameraCamera { index, id: id.into(), node: format!("/dev/video{index}").into() }
    }

    #[test]
    fn probe_lines_round_trip_and_junk_is_ignored() {
        let cameras = vec![cam(0, "platform/vimc.0 Sensor B"), cam(1, "/base/soc/i2c0mux/i2c@1/imx708")];
        let text = format!("{}noise\ncamera\tx\t/dev/video3\tbad index\n", probe_lines(&cameras));
        assert_eq!(parse_probe(&text), cameras);
    }

    #[test]
    fn select_takes_the_first_an_exact_id_or_a_cut_one() {
        // The id as QUERYCAP's 32-byte card field delivers it: 31 bytes.
        let full = "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a";
        let cut = &full[..CARD_LEN];
        let cameras = vec![cam(0, "platform/vimc.0 Sensor B"), cam(1, cut)];
        assert_eq!(select(&cameras, None).unwrap().index, 0);
        assert_eq!(select(&cameras, Some("platform/vimc.0 Sensor B")).unwrap().index, 0);
        assert_eq!(select(&cameras, Some(full)).unwrap().index, 1, "the id libcamera itself prints");
        assert_eq!(select(&cameras, Some(cut)).unwrap().index, 1, "the id roomcam devices prints");
        let e = select(&cameras, Some("imx219")).unwrap_err();
        assert!(e.contains("libcamera:platform/vimc.0 Sensor B"), "{e}");
        assert!(select(&[], None).unwrap_err().contains("no camera"));
    }

    #[test]
    fn the_library_is_read_from_libcamerify_as_debian_and_upstream_write_it() {
        let debian = "if [ \"$LD_PRELOAD\" = \"\" ] ; then\n   LD_PRELOAD='/usr/lib/x86_64-linux-gnu/v4l2-compat.so'\nelse\n   \
                      LD_PRELOAD=\"$LD_PRELOAD \"'/usr/lib/x86_64-linux-gnu/v4l2-compat.so'\nfi\n";
        assert_eq!(libcamerify_library(debian), Some("/usr/lib/x86_64-linux-gnu/v4l2-compat.so".into()));
        let upstream = "   LD_PRELOAD='/usr/libexec/aarch64-linux-gnu/libcamera/v4l2-compat.so'\n";
        assert_eq!(
            libcamerify_library(upstream),
            Some("/usr/libexec/aarch64-linux-gnu/libcamera/v4l2-compat.so".into())
        );
        assert_eq!(libcamerify_library("#!/bin/sh\nexec \"$@\"\n"), None);
    }

    #[test]
    fn ld_preload_keeps_what_was_there() {
        let lib = Path::new("/usr/lib/aarch64-linux-gnu/libcamera/v4l2-compat.so");
        assert_eq!(preload_value(lib, None), OsString::from(lib));
        assert_eq!(preload_value(lib, Some("".into())), OsString::from(lib));
        assert_eq!(
            preload_value(lib, Some("/usr/lib/libfoo.so".into())),
            OsString::from("/usr/lib/aarch64-linux-gnu/libcamera/v4l2-compat.so:/usr/lib/libfoo.so")
        );
    }
}
