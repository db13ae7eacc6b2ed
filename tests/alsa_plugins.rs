//! ALSA capture and playback through alsa-lib's own plugins, no sound
//! hardware: an ALSA config (ALSA_CONFIG_PATH, set before alsa-lib reads
//! anything) defines a `file` PCM whose capture side reads a known tone
//! from a file, and one whose playback side records what is played. The
//! tests check content (frequency, level), not byte counts.
//!
//! One test function on purpose: ALSA_CONFIG_PATH is process-wide.

use std::path::Path;
use std::time::{Duration, Instant};

use roomcam::media::sinks::JITTER_TARGET;
use roomcam::media::{AUDIO_FRAME_SAMPLES, AudioSink, AudioSource, dominant_frequency, rms_dbfs};
use roomcam::media::{AlsaMicrophone, AlsaSpeaker};

fn sine(freq: f32, peak: f32, n: usize) -> Vec<i16> {
    (0..n).map(|i| (peak * (2.0 * std::f32::consts::PI * freq * i as f32 / 48_000.0).sin()) as i16).collect()
}

fn write_raw(path: &Path, pcm: &[i16]) {
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_raw(path: &Path) -> Vec<i16> {
    std::fs::read(path).unwrap().chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

#[test]
fn capture_and_playback_through_alsa_file_plugins() {
    let dir = std::env::temp_dir().join(format!("roomcam-alsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("mic-in.raw");
    let output = dir.join("speaker-out.raw");
    // 2 s of 1 kHz at -12 dBFS as the "microphone".
    write_raw(&input, &sine(1000.0, 8_231.0, 96_000));
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            r#"pcm.roomcam_null {{ type null }}
pcm.mic {{
    type file
    slave.pcm "roomcam_null"
    file "/dev/null"
    infile "{}"
    format "raw"
}}
pcm.speaker {{
    type file
    slave.pcm "roomcam_null"
    file "{}"
    format "raw"
}}
"#,
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    // SAFETY: set before any thread or alsa-lib call in this process.
    unsafe { std::env::set_var("ALSA_CONFIG_PATH", &conf) };

    // Capture: 1 s (50 frames of 20 ms) of what the file holds.
    let mut mic = AlsaMicrophone::open("mic").expect("open capture PCM");
    let mut pcm = Vec::new();
    let mut frame = [0i16; AUDIO_FRAME_SAMPLES];
    for _ in 0..50 {
        mic.read_frame(&mut frame).expect("read");
        pcm.extend_from_slice(&frame);
    }
    let hz = dominant_frequency(&pcm, 48_000).expect("a tone");
    let level = rms_dbfs(&pcm);
    println!("microphone: {hz:.1} Hz at {level:.1} dBFS from the file PCM");
    assert!((hz - 1000.0).abs() < 5.0, "{hz}");
    assert!((level - -15.0).abs() < 1.5, "{level}");

    // A PCM that does not exist: a clear error naming it.
    let err = AlsaMicrophone::open("no_such_pcm").err().expect("must fail").to_string();
    println!("missing PCM: {err}");
    assert!(err.contains("no_such_pcm"), "{err}");

    // Playback: 1 s of 660 Hz talk-back at real-time pace, then silence.
    let mut speaker = AlsaSpeaker::open("speaker").expect("open playback PCM");
    let probe = speaker.delay_probe();
    let tone = sine(660.0, 8_231.0, 48_000);
    let t0 = Instant::now();
    for (i, chunk) in tone.chunks(AUDIO_FRAME_SAMPLES).enumerate() {
        speaker.write(chunk).unwrap();
        let due = Duration::from_millis(20 * (i as u64 + 1));
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let delay = probe();
    drop(speaker);
    let played = read_raw(&output);
    println!(
        "speaker: {} samples written to the file PCM; talk-back delay mean {:.1} ms, max {:.1} ms over {} packets",
        played.len(),
        delay.mean_ms,
        delay.max_ms,
        delay.packets
    );
    // Find the tone: the loudest 0.5 s window.
    let loud: Vec<usize> = played
        .chunks(4_800)
        .enumerate()
        .filter(|(_, c)| c.len() == 4_800 && rms_dbfs(c) > -20.0)
        .map(|(i, _)| i)
        .collect();
    assert!(loud.len() >= 8, "≈1 s of tone must be played, found {} loud 100 ms blocks", loud.len());
    let start = loud[1] * 4_800;
    let hz = dominant_frequency(&played[start..start + 24_000], 48_000).expect("tone");
    assert!((hz - 660.0).abs() < 5.0, "{hz}");
    // Silence, not noise, after the talk ended.
    let tail = &played[played.len().saturating_sub(4_800)..];
    assert!(tail.iter().all(|&s| s == 0), "silence after talk-back");
    // Every packet written is timed when it plays, unless the jitter buffer
    // trimmed it first (when this thread's sleeps overran on a loaded host).
    assert_eq!(delay.packets + delay.trimmed_packets, 50, "{delay:?}");
    assert!(delay.packets >= 25, "most of the talk must play: {delay:?}");
    assert!(delay.mean_ms <= JITTER_TARGET.as_millis() as f64 + 25.0, "{delay:?}");
    std::fs::remove_dir_all(&dir).ok();
}
