//! Opus encode/decode for the microphone and talk-back paths.

use crate::media::{AUDIO_FRAME_DURATION, AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, EncodedAudio, MediaError};

/// Largest Opus packet duration (120 ms at 48 kHz): the decode buffer size.
const MAX_PACKET_SAMPLES: usize = 5_760;

/// Opus never produces more than 1275 bytes per frame; this is the usual
/// "one MTU" ceiling with room to spare.
const MAX_PACKET_BYTES: usize = 1_500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpusApplication {
    /// Tuned for speech intelligibility (a room camera is mostly voices).
    Voip,
    /// Tuned for fidelity (music, ambient sound).
    Audio,
}

#[derive(Clone, Debug)]
pub struct OpusSettings {
    pub bitrate_bps: u32,
    pub application: OpusApplication,
    /// In-band FEC lets the browser rebuild a lost packet from the next one.
    pub inband_fec: bool,
    /// The loss rate FEC is sized for (0–100).
    pub expected_loss_percent: u8,
    /// Discontinuous transmission. Off by default: with DTX the encoder
    /// emits tiny packets that are not meant to be sent, and the RTP layer
    /// would then have to deal with timestamp gaps.
    pub dtx: bool,
    /// libopus' 0–10 effort. 10, libopus' own default: 5 saves only about
    /// a sixth of the encode (0.133 → 0.110 ms per 20 ms frame here,
    /// `benches/encode.rs`), too little to give up quality for.
    pub complexity: u8,
}

impl Default for OpusSettings {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
            application: OpusApplication::Voip,
            inband_fec: true,
            expected_loss_percent: 10,
            dtx: false,
            complexity: 10,
        }
    }
}

/// 48 kHz mono Opus encoder producing one packet per 20 ms frame.
pub struct OpusEncoder {
    inner: opus::Encoder,
    out: Vec<u8>,
}

fn opus_err(what: &str, e: opus::Error) -> MediaError {
    MediaError::Encoder(format!("opus {what}: {e}"))
}

impl OpusEncoder {
    /// Encoder with default settings at `bitrate_bps` (clamped to Opus' 6–510 kb/s).
    pub fn new(bitrate_bps: u32) -> Result<Self, MediaError> {
        Self::with_settings(&OpusSettings { bitrate_bps, ..OpusSettings::default() })
    }

    pub fn with_settings(settings: &OpusSettings) -> Result<Self, MediaError> {
        let app = match settings.application {
            OpusApplication::Voip => opus::Application::Voip,
            OpusApplication::Audio => opus::Application::Audio,
        };
        let mut inner =
            opus::Encoder::new(AUDIO_SAMPLE_RATE, opus::Channels::Mono, app).map_err(|e| opus_err("create", e))?;
        let bitrate = settings.bitrate_bps.clamp(6_000, 510_000) as i32;
        inner.set_bitrate(opus::Bitrate::Bits(bitrate)).map_err(|e| opus_err("set_bitrate", e))?;
        inner.set_inband_fec(settings.inband_fec).map_err(|e| opus_err("set_inband_fec", e))?;
        inner
            .set_packet_loss_perc(i32::from(settings.expected_loss_percent.min(100)))
            .map_err(|e| opus_err("set_packet_loss_perc", e))?;
        inner.set_dtx(settings.dtx).map_err(|e| opus_err("set_dtx", e))?;
        inner.set_complexity(i32::from(settings.complexity.min(10))).map_err(|e| opus_err("set_complexity", e))?;
        Ok(Self { inner, out: vec![0; MAX_PACKET_BYTES] })
    }

    /// Encodes one 20 ms frame into one Opus packet.
    pub fn encode(&mut self, pcm: &[i16; AUDIO_FRAME_SAMPLES]) -> Result<EncodedAudio, MediaError> {
        let n = self.inner.encode(pcm, &mut self.out).map_err(|e| opus_err("encode", e))?;
        Ok(EncodedAudio { data: bytes::Bytes::copy_from_slice(&self.out[..n]), duration: AUDIO_FRAME_DURATION })
    }
}

/// Opus decoder to 48 kHz mono. Accepts mono or stereo packets (browsers
/// send `opus/48000/2`); libopus downmixes stereo for a mono decoder.
pub struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<i16>,
    /// Duration of the last good packet, so concealment fills the same gap.
    last_samples: usize,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, MediaError> {
        let inner = opus::Decoder::new(AUDIO_SAMPLE_RATE, opus::Channels::Mono)
            .map_err(|e| MediaError::Decoder(format!("opus create: {e}")))?;
        Ok(Self { inner, buf: vec![0; MAX_PACKET_SAMPLES], last_samples: AUDIO_FRAME_SAMPLES })
    }

    /// Decodes one packet. An empty packet means "this packet was lost" and
    /// yields concealment audio of the previous packet's duration.
    /// Malformed packets give [`MediaError::Decoder`]; the decoder stays usable.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, MediaError> {
        if packet.is_empty() {
            return self.decode_lost();
        }
        let n = self
            .inner
            .decode(packet, &mut self.buf, false)
            .map_err(|e| MediaError::Decoder(format!("opus packet of {} bytes: {e}", packet.len())))?;
        let n = n.min(self.buf.len());
        if n > 0 {
            self.last_samples = n;
        }
        Ok(self.buf[..n].to_vec())
    }

    /// Packet-loss concealment: audio that papers over one lost packet.
    pub fn decode_lost(&mut self) -> Result<Vec<i16>, MediaError> {
        // libopus fills exactly the buffer it is given when concealing, so
        // the slice length is what sets the concealed duration.
        let n = self.last_samples.clamp(120, MAX_PACKET_SAMPLES);
        let got = self
            .inner
            .decode(&[], &mut self.buf[..n], false)
            .map_err(|e| MediaError::Decoder(format!("opus concealment: {e}")))?;
        Ok(self.buf[..got.min(n)].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{dominant_frequency, rms_dbfs};
    use crate::media::fixtures::sine;

    fn frame(pcm: &[i16]) -> [i16; AUDIO_FRAME_SAMPLES] {
        let mut f = [0i16; AUDIO_FRAME_SAMPLES];
        f.copy_from_slice(&pcm[..AUDIO_FRAME_SAMPLES]);
        f
    }

    #[test]
    fn opus_roundtrip_keeps_tone_and_level() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let src = sine(660.0, 8_231.0, 48_000, 0);
        let mut out = Vec::new();
        for chunk in src.chunks_exact(AUDIO_FRAME_SAMPLES) {
            let pkt = enc.encode(&frame(chunk)).unwrap();
            assert_eq!(pkt.duration, AUDIO_FRAME_DURATION);
            assert!(!pkt.data.is_empty() && pkt.data.len() < 400, "{} bytes", pkt.data.len());
            let pcm = dec.decode(&pkt.data).unwrap();
            assert_eq!(pcm.len(), AUDIO_FRAME_SAMPLES);
            out.extend(pcm);
        }
        // Skip the codec's start-up transient.
        let tail = &out[9_600..];
        let f = dominant_frequency(tail, AUDIO_SAMPLE_RATE).unwrap();
        assert!((f - 660.0).abs() < 2.0, "got {f}");
        let level = rms_dbfs(tail);
        assert!((level - rms_dbfs(&src)).abs() < 1.5, "level {level}");
    }

    #[test]
    fn decoder_accepts_stereo_packets() {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mono = sine(440.0, 8_000.0, 48_000, 0);
        let mut out = Vec::new();
        for chunk in mono.chunks_exact(AUDIO_FRAME_SAMPLES) {
            let interleaved: Vec<i16> = chunk.iter().flat_map(|&s| [s, s]).collect();
            let pkt = enc.encode_vec(&interleaved, 1500).unwrap();
            let pcm = dec.decode(&pkt).unwrap();
            assert_eq!(pcm.len(), AUDIO_FRAME_SAMPLES, "stereo packet decodes to mono samples");
            out.extend(pcm);
        }
        let f = dominant_frequency(&out[9_600..], AUDIO_SAMPLE_RATE).unwrap();
        assert!((f - 440.0).abs() < 2.0, "got {f}");
    }

    #[test]
    fn loss_is_concealed_not_silenced() {
        let mut enc = OpusEncoder::new(32_000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let src = sine(440.0, 8_000.0, 48_000, 0);
        for chunk in src.chunks_exact(AUDIO_FRAME_SAMPLES).take(20) {
            dec.decode(&enc.encode(&frame(chunk)).unwrap().data).unwrap();
        }
        let plc = dec.decode(&[]).unwrap();
        assert_eq!(plc.len(), AUDIO_FRAME_SAMPLES);
        // Concealment continues the tone rather than dropping to silence.
        assert!(rms_dbfs(&plc) > -40.0, "plc level {}", rms_dbfs(&plc));
        let plc2 = dec.decode_lost().unwrap();
        assert_eq!(plc2.len(), AUDIO_FRAME_SAMPLES);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        // TOC code 3 with a frame count of 63 x 20 ms: longer than 120 ms.
        match dec.decode(&[0xFF, 0xFF]) {
            Err(MediaError::Decoder(msg)) => assert!(msg.contains("2 bytes"), "{msg}"),
            other => panic!("expected a decoder error, got {other:?}"),
        }
        // Code 3 with zero frames is invalid too.
        assert!(dec.decode(&[0x03, 0x00]).is_err());
        // Random bytes: any outcome but a panic; the decoder stays usable.
        let mut x: u32 = 0x1234_5678;
        for len in 1..200 {
            let pkt: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Ok(pcm) = dec.decode(&pkt) {
                assert!(pcm.len() <= MAX_PACKET_SAMPLES);
            }
        }
        let mut enc = OpusEncoder::new(24_000).unwrap();
        let pkt = enc.encode(&[0; AUDIO_FRAME_SAMPLES]).unwrap();
        assert_eq!(dec.decode(&pkt.data).unwrap().len(), AUDIO_FRAME_SAMPLES);
    }

    #[test]
    fn bitrate_setting_changes_packet_size() {
        let src = sine(1000.0, 8_000.0, 48_000, 0);
        let total = |bps: u32| -> usize {
            let mut enc = OpusEncoder::with_settings(&OpusSettings {
                bitrate_bps: bps,
                application: OpusApplication::Audio,
                inband_fec: false,
                ..OpusSettings::default()
            })
            .unwrap();
            src.chunks_exact(AUDIO_FRAME_SAMPLES).map(|c| enc.encode(&frame(c)).unwrap().data.len()).sum()
        };
        let low = total(12_000);
        let high = total(96_000);
        // 1 s of audio: bytes ≈ bitrate / 8.
        assert!((800..=2_500).contains(&low), "12 kb/s gave {low} bytes");
        assert!(high > 3 * low, "96 kb/s gave {high} bytes vs {low}");
    }
}
