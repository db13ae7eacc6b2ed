//! The fuzz targets' bodies (roomcam::media::fuzzing and roomcam::fuzzing,
//! also used by fuzz/fuzz_targets/*) as a plain stable-toolchain test: over
//! the corpus in fuzz/corpus and over deterministic mutations of it and of
//! generated seeds (bit flips, truncation, splices). cargo-fuzz explores
//! further; this keeps the "never panics on bad input" property and the
//! targets' invariants checked in CI.
//!
//! `ROOMCAM_WRITE_CORPUS=1 cargo test --test fuzz_corpus` (re)writes the
//! generated seeds (MJPEG, H.264, RTCP) into fuzz/corpus/ for cargo-fuzz; the
//! signaling and SDP seeds are captures (fuzz/capture/record-signaling.mjs).

use std::path::Path;

use roomcam::fuzzing::{config_file, remote_description, room_messages, rtcp_feedback, socketio_frame};
use roomcam::media::fuzzing::{camera_buffer, h264_stream};
use roomcam::media::{H264Encoder, H264Settings, TestPattern, VideoEncoder};
use rtc::rtcp::Packet as RtcpPacket;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => d.truncate(rng.below(d.len())),
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0x00, 0xFF, 0x7F, 0x80, 0x01][rng.below(5)];
            }
            3 => {
                let i = rng.below(d.len() + 1);
                let n = rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(i..i, junk);
            }
            _ if d.len() > 8 => {
                // Duplicate a slice (repeated markers / NAL units).
                let a = rng.below(d.len() - 4);
                let b = (a + 1 + rng.below(64)).min(d.len());
                let chunk = d[a..b].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, chunk);
            }
            _ => {}
        }
    }
    d
}

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(dir);
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect()
}

fn jpeg_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (w, h, q, sf) in [
        (16u16, 16u16, 90u8, jpeg_encoder::SamplingFactor::R_4_2_0),
        (33, 17, 50, jpeg_encoder::SamplingFactor::R_4_2_2),
        (64, 48, 75, jpeg_encoder::SamplingFactor::R_4_4_4),
    ] {
        let rgb: Vec<u8> = (0..w as usize * h as usize * 3).map(|i| (i * 31 % 255) as u8).collect();
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, q);
        enc.set_sampling_factor(sf);
        enc.encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        seeds.push(out);
    }
    seeds
}

fn h264_seeds() -> Vec<Vec<u8>> {
    let mut enc = H264Encoder::new(H264Settings {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_kbps: 200,
        ..H264Settings::default()
    })
    .unwrap();
    let mut src = TestPattern::new(320, 240, 30).unwrap().without_pacing();
    let mut seeds = Vec::new();
    for _ in 0..3 {
        let frame = src.next_picture();
        if let Some(ev) = enc.encode(&frame, false).unwrap() {
            seeds.push(ev.data.to_vec());
        }
    }
    seeds
}

fn write_corpus(dir: &str, seeds: &[Vec<u8>]) {
    let named: Vec<(String, Vec<u8>)> =
        seeds.iter().enumerate().map(|(i, s)| (format!("seed-{i}"), s.clone())).collect();
    write_named_corpus(dir, &named);
}

fn write_named_corpus(dir: &str, seeds: &[(String, Vec<u8>)]) {
    if std::env::var_os("ROOMCAM_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, s) in seeds {
        std::fs::write(dir.join(name), s).unwrap();
    }
}

/// RTCP as a viewer's browser sends it: compounds led by a receiver report
/// (with REMB, PLI, NACK), a FIR, a sender report with its CNAME, and two
/// transport-wide CC feedbacks captured from Chrome (the byte strings of
/// rtc-rtcp's `transport_layer_cc` tests, from pion's captures).
fn rtcp_seeds() -> Vec<(String, Vec<u8>)> {
    let report = || {
        Box::new(ReceiverReport {
            ssrc: 0x1234_5678,
            reports: vec![ReceptionReport {
                ssrc: 0x9ABC_DEF0,
                fraction_lost: 12,
                total_lost: 3,
                last_sequence_number: 0x0001_2345,
                jitter: 270,
                last_sender_report: 0xDEAD_BEEF,
                delay: 6554,
            }],
            ..Default::default()
        }) as Box<dyn RtcpPacket>
    };
    let remb = || {
        Box::new(ReceiverEstimatedMaximumBitrate { sender_ssrc: 1, bitrate: 1_250_000.0, ssrcs: vec![0x9ABC_DEF0] })
            as Box<dyn RtcpPacket>
    };
    let pli = || Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 0x9ABC_DEF0 }) as Box<dyn RtcpPacket>;
    let compounds: Vec<(&str, Vec<Box<dyn RtcpPacket>>)> = vec![
        ("rr-remb", vec![report(), remb()]),
        ("rr-pli", vec![report(), pli()]),
        ("rr-remb-pli", vec![report(), remb(), pli()]),
        (
            "fir",
            vec![Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![FirEntry { ssrc: 0x9ABC_DEF0, sequence_number: 7 }],
            })],
        ),
        (
            "rr-nack",
            vec![
                report(),
                Box::new(TransportLayerNack {
                    sender_ssrc: 1,
                    media_ssrc: 0x9ABC_DEF0,
                    nacks: vec![NackPair { packet_id: 4000, lost_packets: 0b1010 }],
                }),
            ],
        ),
        (
            "sr-sdes",
            vec![
                Box::new(SenderReport {
                    ssrc: 0x9ABC_DEF0,
                    ntp_time: 0xE1A2_B3C4_D5E6_F708,
                    rtp_time: 90_000,
                    packet_count: 100,
                    octet_count: 120_000,
                    ..Default::default()
                }),
                Box::new(SourceDescription {
                    chunks: vec![SourceDescriptionChunk {
                        source: 0x9ABC_DEF0,
                        items: vec![SourceDescriptionItem { sdes_type: SdesType::SdesCname, text: "roomcam".into() }],
                    }],
                }),
            ],
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = compounds
        .into_iter()
        .map(|(name, packets)| (name.to_owned(), rtc::rtcp::packet::marshal(&packets).unwrap().to_vec()))
        .collect();
    seeds.push((
        "twcc-chrome-1".into(),
        vec![
            0xaf, 0xcd, 0x0, 0x5, 0xfa, 0x17, 0xfa, 0x17, 0x43, 0x3, 0x2f, 0xa0, 0x0, 0x99, 0x0, 0x1, 0x3d, 0xe8, 0x2,
            0x17, 0x20, 0x1, 0x94, 0x1,
        ],
    ));
    seeds.push((
        "twcc-chrome-2".into(),
        vec![
            0xaf, 0xcd, 0x0, 0x6, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb, 0x1, 0x74, 0x0, 0xe, 0x45, 0xb1,
            0x5a, 0x40, 0xd8, 0x0, 0xf0, 0xff, 0xd0, 0x0, 0x0, 0x3,
        ],
    ));
    for (name, bytes) in &seeds {
        assert!(rtc::rtcp::packet::unmarshal(&mut bytes.as_slice()).is_ok(), "seed {name} does not parse");
    }
    seeds
}

fn iterations(default: usize) -> usize {
    std::env::var("ROOMCAM_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn camera_buffers_never_panic() {
    let mut seeds = jpeg_seeds();
    write_corpus("mjpeg", &seeds);
    seeds.extend(corpus("mjpeg"));
    replay(&seeds, 0x9E37_79B9_7F4A_7C15, 3_000, Mutants::Bytes, camera_buffer);
}

#[test]
fn h264_streams_never_panic() {
    let mut seeds = h264_seeds();
    write_corpus("h264", &seeds);
    seeds.extend(corpus("h264"));
    replay(&seeds, 0xD1B5_4A32_D192_ED03, 400, Mutants::Bytes, h264_stream);
}

/// What a test's mutations may be.
#[derive(Clone, Copy)]
enum Mutants {
    Bytes,
    /// Kept valid UTF-8: the text targets ignore anything else, as roomcam's
    /// inputs there are text.
    Text,
}

/// Runs `body` over every seed, then over mutations of them.
fn replay(seeds: &[Vec<u8>], rng_seed: u64, default_iterations: usize, mutants: Mutants, body: fn(&[u8])) {
    assert!(!seeds.is_empty(), "no seeds");
    for s in seeds {
        body(s);
    }
    let mut rng = Rng(rng_seed);
    for _ in 0..iterations(default_iterations) {
        let seed = &seeds[rng.below(seeds.len())];
        let mutant = mutate(&mut rng, seed);
        match mutants {
            Mutants::Bytes => body(&mutant),
            Mutants::Text => body(String::from_utf8_lossy(&mutant).as_bytes()),
        }
    }
}

/// A text target over its corpus (captures and hand-written files) plus `extra`.
fn replay_text(dir: &str, extra: &[Vec<u8>], rng_seed: u64, default_iterations: usize, body: fn(&[u8])) {
    let mut seeds = corpus(dir);
    assert!(!seeds.is_empty(), "fuzz/corpus/{dir} is empty");
    seeds.extend_from_slice(extra);
    replay(&seeds, rng_seed, default_iterations, Mutants::Text, body);
}

#[test]
fn socketio_frames_never_panic() {
    // Frames a server could send that the captures do not show.
    let extra: Vec<Vec<u8>> = [
        "",
        "6",
        "5",
        "1",
        "2probe",
        "3probe",
        "41",
        "43",
        "451-[\"x\",{\"_placeholder\":true}]",
        "42/,7[\"bye\",\"fuzz\",1.5e300]",
    ]
    .iter()
    .map(|f| f.as_bytes().to_vec())
    .collect();
    replay_text("socketio", &extra, 0xA076_1D64_78BD_642F, 20_000, socketio_frame);
}

#[test]
fn room_sessions_never_panic() {
    replay_text("room_protocol", &[], 0xE703_7ED1_A0B4_28DB, 1_000, room_messages);
}

#[test]
fn config_files_never_panic() {
    replay_text("config", &[], 0x8EBC_6AF0_9C88_C6E3, 2_000, config_file);
}

#[test]
fn remote_descriptions_never_panic() {
    replay_text("sdp", &[], 0x5899_65CC_7537_4CC3, 1_000, remote_description);
}

#[test]
fn rtcp_feedback_never_panics() {
    let named = rtcp_seeds();
    write_named_corpus("rtcp", &named);
    let mut seeds: Vec<Vec<u8>> = named.into_iter().map(|(_, bytes)| bytes).collect();
    seeds.extend(corpus("rtcp"));
    replay(&seeds, 0x1D8E_4E27_C47D_124F, 20_000, Mutants::Bytes, rtcp_feedback);
}
