//! Board profiles (`board/profiles/*.toml`, built into the binary): picture
//! size, frame rate, bitrate and encoder threads that suit a board. Chosen
//! with `board = "NAME"` in the config or `--board NAME`; every key the
//! config file or the command line sets explicitly still wins.

/// Name and TOML of every profile.
pub const PROFILES: &[(&str, &str)] = &[
    ("generic", include_str!("../board/profiles/generic.toml")),
    ("pi-zero-2w", include_str!("../board/profiles/pi-zero-2w.toml")),
    ("pi3", include_str!("../board/profiles/pi3.toml")),
    ("pi4", include_str!("../board/profiles/pi4.toml")),
    ("pi5", include_str!("../board/profiles/pi5.toml")),
];

pub fn names() -> Vec<&'static str> {
    PROFILES.iter().map(|(name, _)| *name).collect()
}

/// The profile's settings as a TOML table.
pub fn profile(name: &str) -> Result<toml::Table, String> {
    let (_, text) = PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("unknown board {name:?}; known boards: {}", names().join(", ")))?;
    toml::from_str(text).map_err(|e| format!("board profile {name}: {e}"))
}

/// `over` on top of `base`, table by table (a key in `over` wins).
pub fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The profile for a board model as the kernel names it
/// (`/proc/device-tree/model`, e.g. "Raspberry Pi 4 Model B Rev 1.4").
pub fn suggest(model: &str) -> &'static str {
    let model = model.trim_end_matches('\0');
    if model.contains("Raspberry Pi Zero 2") {
        "pi-zero-2w"
    } else if model.contains("Raspberry Pi 5") {
        "pi5"
    } else if model.contains("Raspberry Pi 4") || model.contains("Raspberry Pi Compute Module 4") {
        "pi4"
    } else if model.contains("Raspberry Pi 3") || model.contains("Raspberry Pi Compute Module 3") {
        "pi3"
    } else {
        "generic"
    }
}

/// Whether `/proc/cpuinfo` describes an ARMv6 core (Pi Zero W, Pi 1: an
/// ARM1176, "ARMv6-compatible processor … (v6l)"), where OpenH264 cannot
/// keep a useful frame rate and only the hardware encoder is realistic.
pub fn armv6_core(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|line| line.starts_with("model name") && (line.contains("(v6l)") || line.contains("ARMv6")))
}

/// What to tell the operator of an ARMv6 board that would encode with
/// OpenH264; `None` elsewhere.
pub fn software_encoder_warning() -> Option<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    armv6_core(&cpuinfo).then_some(
        "this board's ARMv6 core (Pi Zero W, Pi 1) cannot encode H.264 in software at a useful rate: only the \
         hardware encoder is realistic here (bcm2835-codec: `modprobe bcm2835_codec`, [camera] encoder = \"v4l2m2m\")",
    )
}

/// What `roomcam devices` says about the board: its model, the profile
/// that suits it, what that profile sets, and how to use it.
pub fn suggestion(model: Option<&str>) -> String {
    let name = model.map_or("generic", suggest);
    let settings = profile(name)
        .ok()
        .and_then(|table| table.get("camera").and_then(toml::Value::as_table).cloned())
        .map(|camera| {
            let get = |key: &str| camera.get(key).map(|v| v.to_string().trim_matches('"').to_owned());
            format!(
                "{} at {} fps, {} kbit/s, {} encoder thread(s)",
                get("size").unwrap_or_default(),
                get("fps").unwrap_or_default(),
                get("bitrate").unwrap_or_default(),
                get("encoder-threads").unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        "Board: {}\n  suggested profile: {name} ({settings})\n  use it with board = \"{name}\" in the config or --board {name}; keys you set yourself still win",
        model.unwrap_or("unknown (no /proc/device-tree/model)")
    )
}

/// This machine's model and the profile suggested for it.
pub fn detect() -> (Option<String>, &'static str) {
    match std::fs::read_to_string("/proc/device-tree/model") {
        Ok(model) => {
            let model = model.trim_end_matches('\0').trim().to_owned();
            let name = suggest(&model);
            (Some(model), name)
        }
        Err(_) => (None, "generic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armv6_cores_are_told_apart() {
        let pi_zero_w = "processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\nBogoMIPS\t: 697.95\n\
                         CPU architecture: 7\nHardware\t: BCM2835\n";
        let pi_3_armhf = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        let pi_4_arm64 = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n";
        assert!(armv6_core(pi_zero_w));
        assert!(!armv6_core(pi_3_armhf));
        assert!(!armv6_core(pi_4_arm64));
        assert!(!armv6_core(""));
    }
    use crate::config::{Config, FrameSize};
    use std::path::Path;

    #[test]
    fn suggestion_names_the_profile_and_what_it_sets() {
        let text = suggestion(Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert!(text.starts_with("Board: Raspberry Pi 4 Model B Rev 1.4\n"), "{text}");
        assert!(
            text.contains("suggested profile: pi4 (1280x720 at 25 fps, 2000 kbit/s, 3 encoder thread(s))"),
            "{text}"
        );
        assert!(text.contains("--board pi4"), "{text}");
        let text = suggestion(None);
        assert!(text.contains("unknown") && text.contains("suggested profile: generic ("), "{text}");
    }

    #[test]
    fn every_profile_is_a_valid_config_with_the_four_camera_keys_and_maybe_the_complexity() {
        for (name, text) in PROFILES {
            let config = Config::parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let table = profile(name).unwrap();
            let camera = table["camera"].as_table().unwrap();
            let mut keys: Vec<&str> =
                camera.keys().map(String::as_str).filter(|k| *k != "encoder-complexity").collect();
            keys.sort();
            assert_eq!(keys, ["bitrate", "encoder-threads", "fps", "size"], "{name}");
            assert_eq!(table.len(), 1, "{name}: camera settings only");
            assert!(text.lines().filter(|l| l.starts_with('#')).count() >= 3, "{name}: say why");
            assert!(config.camera.encoder_threads >= 1);
        }
        let generic = Config::parse(PROFILES[0].1, Path::new("generic")).unwrap();
        assert_eq!(generic.camera, Config::default().camera, "generic = the built-in defaults");
    }

    #[test]
    fn unknown_board_names_the_known_ones() {
        let err = profile("pi9").unwrap_err();
        assert!(err.contains("pi-zero-2w, pi3, pi4, pi5"), "{err}");
    }

    #[test]
    fn models_map_to_profiles() {
        assert_eq!(suggest("Raspberry Pi Zero 2 W Rev 1.0\0"), "pi-zero-2w");
        assert_eq!(suggest("Raspberry Pi 3 Model B Plus Rev 1.3"), "pi3");
        assert_eq!(suggest("Raspberry Pi 4 Model B Rev 1.4"), "pi4");
        assert_eq!(suggest("Raspberry Pi 5 Model B Rev 1.0"), "pi5");
        assert_eq!(suggest("Raspberry Pi Model B Rev 2"), "generic");
        assert_eq!(suggest("QEMU virt"), "generic");
    }

    #[test]
    fn merge_is_deep_and_the_top_wins() {
        let mut base: toml::Table =
            toml::from_str("[camera]\nfps = 15\nbitrate = 600\n[log]\nlevel = \"info\"").unwrap();
        let over: toml::Table = toml::from_str("[camera]\nfps = 30").unwrap();
        merge(&mut base, &over);
        assert_eq!(base["camera"]["fps"].as_integer(), Some(30));
        assert_eq!(base["camera"]["bitrate"].as_integer(), Some(600));
        assert_eq!(base["log"]["level"].as_str(), Some("info"));
    }

    fn load(text: &str, cli_board: Option<&str>) -> Result<Config, crate::config::ConfigError> {
        Config::parse_with_board(text, Path::new("roomcam.toml"), cli_board)
    }

    #[test]
    fn board_in_the_file_fills_what_the_file_leaves_out() {
        let config = load("board = \"pi4\"\n[camera]\nfps = 15\n", None).unwrap();
        assert_eq!(config.board.as_deref(), Some("pi4"));
        assert_eq!(config.camera.size, FrameSize { width: 1280, height: 720 }, "from the profile");
        assert_eq!(config.camera.bitrate, 2000, "from the profile");
        assert_eq!(config.camera.encoder_threads, 3, "from the profile");
        assert_eq!(config.camera.fps, 15, "the file wins");
        assert_eq!(config.camera.device, "auto", "keys outside the profile keep their defaults");
    }

    #[test]
    fn board_on_the_command_line_wins_over_the_file_board() {
        let config = load("board = \"pi4\"\n[camera]\nbitrate = 700\n", Some("pi-zero-2w")).unwrap();
        assert_eq!(config.board.as_deref(), Some("pi-zero-2w"));
        assert_eq!(config.camera.fps, 15);
        assert_eq!(config.camera.bitrate, 700, "the file's explicit bitrate still wins");
        let config = load("", Some("pi5")).unwrap();
        assert_eq!((config.camera.fps, config.camera.bitrate), (30, 2500));
    }

    #[test]
    fn unknown_board_is_a_config_error() {
        let err = load("board = \"pi9\"\n", None).unwrap_err();
        assert!(matches!(err, crate::config::ConfigError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("unknown board \"pi9\""), "{err}");
        assert!(load("", Some("nope")).is_err());
    }
}
