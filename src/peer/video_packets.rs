//! H.264 frames into RTP packets, with the header extensions roomcam adds.
//!
//! webrtc 0.21.1's `TrackLocalStaticSample` packetizes too, but maps an
//! extension's URI to the id it had when the track was *bound*, which is
//! before negotiation: when roomcam answers a browser's offer, the
//! playout-delay hint went out under id 4, which is `sdes:mid` in Chrome's
//! offer. So roomcam packetizes video itself, at the ids the sender reports
//! once connected, and writes the packets to a `TrackLocalStaticRTP`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp::packetizer::Packetizer;
use rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionParameters;
use rtc::shared::marshal::{Marshal, MarshalSize};

use super::PlayoutDelay;
use super::setup::{PLAYOUT_DELAY_URI, h264_codec};

/// What roomcam's packets must fit in: webrtc's own choice, room left for
/// SRTP, the extensions and an IPv6/TURN path under a 1280-byte MTU.
const RTP_MTU: usize = 1200;
const VIDEO_CLOCK_RATE: u32 = 90_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum VideoPacketError {
    #[error("H.264 packetizer: {0}")]
    Packetizer(String),
}

/// The packetizer of one video stream.
pub(crate) struct VideoPackets {
    packetizer: Box<dyn Packetizer + Send>,
    /// The negotiated id and the encoded value of the playout-delay hint.
    playout_delay: Option<(u8, Bytes)>,
}

impl VideoPackets {
    /// `negotiated`: the header extensions the sender reports after
    /// negotiation; the hint is sent only if the viewer accepted it.
    pub(crate) fn new(
        ssrc: u32,
        payload_type: u8,
        negotiated: &[RTCRtpHeaderExtensionParameters],
        playout_delay: Option<PlayoutDelay>,
    ) -> Result<Self, VideoPacketError> {
        let payloader = h264_codec().payloader().map_err(|e| VideoPacketError::Packetizer(e.to_string()))?;
        let packetizer = rtp::packetizer::new_packetizer(
            Instant::now(),
            RTP_MTU,
            payload_type,
            ssrc,
            payloader,
            Box::new(rtp::sequence::new_random_sequencer()),
            VIDEO_CLOCK_RATE,
        );
        let playout_delay = playout_delay.and_then(|delay| {
            let id = negotiated.iter().find(|e| e.uri == PLAYOUT_DELAY_URI)?.id;
            Some((u8::try_from(id).ok()?, encode_playout_delay(delay)))
        });
        Ok(VideoPackets { packetizer: Box::new(packetizer), playout_delay })
    }

    /// Whether the packets carry the playout-delay hint.
    pub(crate) fn sends_playout_delay(&self) -> bool {
        self.playout_delay.is_some()
    }

    /// A frame this viewer is not sent: its time still passes on the RTP clock.
    pub(crate) fn skip(&mut self, duration: Duration) {
        self.packetizer.skip_samples(ticks(duration));
    }

    /// One frame's packets; the RTP timestamp advances by `duration`.
    pub(crate) fn packetize(
        &mut self,
        frame: &Bytes,
        duration: Duration,
        now: Instant,
    ) -> Result<Vec<rtp::Packet>, VideoPacketError> {
        let mut packets = self
            .packetizer
            .packetize(now, frame, ticks(duration))
            .map_err(|e| VideoPacketError::Packetizer(e.to_string()))?;
        if let Some((id, value)) = &self.playout_delay {
            // libwebrtc sends it on every packet of a frame: the receiver may
            // lose any of them.
            for packet in &mut packets {
                packet
                    .header
                    .set_extension(*id, value.clone())
                    .map_err(|e| VideoPacketError::Packetizer(e.to_string()))?;
            }
        }
        Ok(packets)
    }
}

fn ticks(duration: Duration) -> u32 {
    (duration.as_secs_f64() * f64::from(VIDEO_CLOCK_RATE)) as u32
}

fn encode_playout_delay(delay: PlayoutDelay) -> Bytes {
    let extension =
        PlayoutDelayExtension { min_delay: delay.min_ms.div_ceil(10), max_delay: delay.max_ms.div_ceil(10) };
    let mut buf = BytesMut::zeroed(extension.marshal_size());
    // Both values are at most 6553 (u16 / 10), over the 12-bit limit only for
    // absurd settings, which the config refuses.
    extension.marshal_to(&mut buf).expect("playout delay within 12 bits");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    fn extension(uri: &str, id: u16) -> RTCRtpHeaderExtensionParameters {
        RTCRtpHeaderExtensionParameters { uri: uri.to_owned(), id, encrypted: false }
    }

    /// An IDR bigger than one packet: SPS, PPS, then a large slice.
    fn frame() -> Bytes {
        let mut data = vec![0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65];
        data.extend(std::iter::repeat_n(0xab, 3000));
        Bytes::from(data)
    }

    #[test]
    fn every_packet_carries_the_hint_at_the_negotiated_id() {
        let negotiated = [extension("urn:ietf:params:rtp-hdrext:sdes:mid", 4), extension(PLAYOUT_DELAY_URI, 9)];
        let mut video = VideoPackets::new(1234, 102, &negotiated, Some(PlayoutDelay::LOW)).unwrap();
        assert!(video.sends_playout_delay());
        let packets = video.packetize(&frame(), Duration::from_millis(40), Instant::now()).unwrap();
        assert!(packets.len() >= 3, "{} packets", packets.len());
        for packet in &packets {
            assert_eq!((packet.header.ssrc, packet.header.payload_type), (1234, 102));
            assert!(packet.header.get_extension(4).is_none(), "the mid id was used");
            let mut value = packet.header.get_extension(9).expect("hint at id 9");
            let hint = PlayoutDelayExtension::unmarshal(&mut value).unwrap();
            assert_eq!((hint.min_delay, hint.max_delay), (0, 10));
        }
        assert!(packets.last().unwrap().header.marker && !packets[0].header.marker);
        let next = video.packetize(&frame(), Duration::from_millis(40), Instant::now()).unwrap();
        assert_eq!(next[0].header.timestamp.wrapping_sub(packets[0].header.timestamp), 3600);
        assert_eq!(next[0].header.sequence_number, packets.last().unwrap().header.sequence_number.wrapping_add(1));
    }

    #[test]
    fn no_hint_unless_asked_for_and_negotiated() {
        let negotiated = [extension(PLAYOUT_DELAY_URI, 9)];
        for (offered, delay) in [(&negotiated[..], None), (&[][..], Some(PlayoutDelay::LOW))] {
            let mut video = VideoPackets::new(1, 102, offered, delay).unwrap();
            assert!(!video.sends_playout_delay());
            let packets = video.packetize(&frame(), Duration::from_millis(40), Instant::now()).unwrap();
            assert!(packets.iter().all(|p| !p.header.extension));
        }
    }
}
