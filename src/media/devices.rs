//! `roomcam devices`: what cameras and sound devices this board has, in
//! the words the config file uses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use alsa::Direction;
use v4l::Device;
use v4l::video::Capture;

use super::MediaError;
use super::convert::PixelFormat;
use super::sources::discovery;
use super::sources::libcamera;
use super::sources::v4l2::{device_error, modes};

/// /dev/video* nodes, sorted by number, plus the stable /dev/v4l/by-id names pointing at them.
pub fn video_nodes(dev_dir: &Path) -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dev_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    let by_id: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dev_dir.join("v4l/by-id"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some((std::fs::canonicalize(e.path()).ok()?, e.path())))
        .collect();
    nodes
        .into_iter()
        .map(|(_, p)| {
            let links = by_id.iter().filter(|(target, _)| *target == p).map(|(_, l)| l.clone()).collect();
            (p, links)
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct PcmInfo {
    pub name: String,
    pub description: String,
    /// None: both directions.
    pub direction: Option<Direction>,
}

/// The PCMs alsa-lib knows (cards' hw/plughw/default/dsnoop… and the config's own).
pub fn list_pcms() -> Result<Vec<PcmInfo>, MediaError> {
    let hints = alsa::device_name::HintIter::new_str(None, "pcm")
        .map_err(|e| MediaError::Device { device: "ALSA".into(), reason: format!("list PCMs: {e}") })?;
    Ok(hints
        .filter_map(|h| {
            Some(PcmInfo {
                name: h.name?,
                description: h.desc.unwrap_or_default().replace('\n', " — "),
                direction: h.direction,
            })
        })
        .collect())
}

/// Sound cards: (index, id, long name).
pub fn list_cards() -> Vec<(i32, String, String)> {
    alsa::card::Iter::new()
        .filter_map(Result::ok)
        .map(|c| (c.get_index(), c.get_name().unwrap_or_default(), c.get_longname().unwrap_or_default()))
        .collect()
}

fn describe_camera(path: &Path, out: &mut String) {
    let label = path.display().to_string();
    let dev = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(out, "  {}", device_error(&label, "open", &e));
            return;
        }
    };
    let caps = match dev.query_caps() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "  {}", device_error(&label, "query capabilities", &e));
            return;
        }
    };
    let _ = writeln!(
        out,
        "  driver {}, card {:?}, bus {}",
        discovery::until_nul(&caps.driver),
        discovery::until_nul(&caps.card),
        discovery::until_nul(&caps.bus)
    );
    if let Some(node) = discovery::summarize(path)
        && let Some(why) = discovery::classify(&node).explain()
    {
        let _ = writeln!(out, "  {why}");
        if !node.capture || node.mem2mem {
            return;
        }
    }
    if let Ok(fmt) = dev.format() {
        let _ = writeln!(out, "  current: {}x{} {}", fmt.width, fmt.height, fmt.fourcc);
    }
    match modes(&dev, None) {
        Ok(modes) => {
            let mut last = [0u8; 4];
            for m in modes {
                if m.fourcc != last {
                    let usable = match PixelFormat::from_fourcc(&m.fourcc) {
                        Some(_) => "",
                        None => " (not usable by roomcam)",
                    };
                    let _ = writeln!(out, "  {} {}{usable}:", String::from_utf8_lossy(&m.fourcc), m.description);
                    last = m.fourcc;
                }
                let rates: Vec<String> = m
                    .rates
                    .iter()
                    .map(|r| format!("{r:.4}").trim_end_matches('0').trim_end_matches('.').to_string())
                    .collect();
                let _ = writeln!(
                    out,
                    "    {}x{} @ {} fps",
                    m.width,
                    m.height,
                    if rates.is_empty() { "?".into() } else { rates.join(", ") }
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  {}", device_error(&label, "list formats", &e));
        }
    }
}

/// libcamera's cameras as this process sees them through the V4L2 layer:
/// machine lines for `auto`, or with `describe` what `roomcam devices`
/// prints for each (its formats, sizes, and what is lost: no frame-rate
/// control, no camera controls).
pub fn libcamera_cameras_here(describe: bool) -> String {
    let cameras = libcamera::cameras_in_process(Path::new("/dev"));
    if !describe {
        return libcamera::probe_lines(&cameras);
    }
    let mut out = String::new();
    for camera in cameras {
        let _ = writeln!(out, "libcamera:{}", camera.id);
        let _ = writeln!(out, "  camera {} of libcamera, through {}", camera.index, camera.node.display());
        describe_camera(&camera.node, &mut out);
        let _ = writeln!(out, "  (through libcamera's V4L2 layer: the pipeline's own frame rate, no camera controls)");
    }
    out
}

/// The whole report, as printed by `roomcam devices`.
pub fn report() -> String {
    let mut out = String::new();
    let (model, _) = crate::board::detect();
    let _ = writeln!(out, "{}\n", crate::board::suggestion(model.as_deref()));
    let nodes = video_nodes(Path::new("/dev"));
    let _ = writeln!(out, "Cameras (V4L2) — use the path or a by-id name as --camera / [camera] device:");
    if nodes.is_empty() {
        let _ = writeln!(out, "  none found (/dev/video*): is a camera plugged in and its driver loaded?");
    }
    for (path, links) in nodes {
        let _ = writeln!(out, "{}", path.display());
        for l in links {
            let _ = writeln!(out, "  also {}", l.display());
        }
        describe_camera(&path, &mut out);
    }
    let _ = writeln!(
        out,
        "\nCameras (libcamera: camera modules on the CSI connector) — use device = \"libcamera\" (the first) or \"libcamera:ID\":"
    );
    match libcamera::compat_library() {
        None => {
            let _ = writeln!(
                out,
                "  libcamera's V4L2 layer (v4l2-compat.so, package libcamera-v4l2) is not installed: roomcam reads \
                 libcamera cameras through it (apt install libcamera-v4l2)"
            );
        }
        Some(library) => match libcamera::probe(&library, true) {
            Ok(text) if text.trim().is_empty() => {
                let _ = writeln!(out, "  none found (libcamera through {})", library.display());
            }
            Ok(text) => out.push_str(&text),
            Err(e) => {
                let _ = writeln!(out, "  {e}");
            }
        },
    }
    let _ = writeln!(
        out,
        "\nH.264 encoders in hardware (V4L2 memory-to-memory) — [camera] encoder = \"auto\" takes the first:"
    );
    let encoders = super::encoders::v4l2m2m::find_encoders(Path::new("/dev"), super::encoders::v4l2m2m::H264);
    if encoders.is_empty() {
        let _ = writeln!(
            out,
            "  none found: roomcam encodes with OpenH264 (a Pi Zero 2 W, 3 or 4 has bcm2835-codec at /dev/video11; \
             is the bcm2835_codec module loaded?)"
        );
        if let Some(warning) = crate::board::software_encoder_warning() {
            let _ = writeln!(out, "  {warning}");
        }
    }
    for node in encoders {
        let raw: Vec<String> = node.raw_formats.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        let _ = writeln!(out, "{}  {} ({}), from {}", node.path.display(), node.card, node.driver, raw.join(", "));
    }
    let _ = writeln!(out, "\nSound cards:");
    let cards = list_cards();
    if cards.is_empty() {
        let _ = writeln!(
            out,
            "  none found (/proc/asound/cards): is the sound driver loaded? (no access to /dev/snd: add the user to the `audio` group)"
        );
    }
    for (i, id, long) in cards {
        let _ = writeln!(out, "  card {i}: {id} — {long}");
    }
    let _ = writeln!(out, "\nALSA PCMs — use the name as --microphone (capture) / --speaker (playback):");
    match list_pcms() {
        Ok(pcms) => {
            for p in pcms {
                let dir = match p.direction {
                    Some(alsa::Direction::Capture) => "capture",
                    Some(alsa::Direction::Playback) => "playback",
                    None => "capture+playback",
                };
                let _ = writeln!(out, "  {:<40} {dir:<17} {}", p.name, p.description);
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}
