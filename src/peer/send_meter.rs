//! What leaves for one viewer, by kind: pictures, their repairs (RTX) and
//! audio. When a picture stalls on a slow link, the estimate alone does not
//! say what filled the link; these counts do. A debug line every
//! [`REPORT_EVERY`] while sending; the totals go in the peer's "closed" line.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::debug;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::shared::marshal::MarshalSize;

use super::wrapped_interceptor::{delegate_protocol_to_inner, delegate_remote_streams_to_inner};

pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Video,
    Repairs,
    Audio,
}

/// Bytes sent so far (RTP header and payload), by kind.
#[derive(Debug, Default)]
pub(crate) struct SentBytes {
    video: AtomicU64,
    repairs: AtomicU64,
    audio: AtomicU64,
}

impl SentBytes {
    fn counter(&self, flow: Flow) -> &AtomicU64 {
        match flow {
            Flow::Video => &self.video,
            Flow::Repairs => &self.repairs,
            Flow::Audio => &self.audio,
        }
    }

    /// (video, repairs, audio) in bytes.
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (read(&self.video), read(&self.repairs), read(&self.audio))
    }
}

/// `inner` (the NACK responder, whose output is every RTP packet the
/// application sent plus the repairs it makes), counted as it leaves.
pub(crate) struct SendMeter<I> {
    inner: I,
    peer: String,
    flows: HashMap<u32, Flow>,
    sent: Arc<SentBytes>,
    /// The totals at the last debug line, and when.
    reported: Option<((u64, u64, u64), Instant)>,
}

impl<I> SendMeter<I> {
    pub(crate) fn new(inner: I, peer: &str, sent: Arc<SentBytes>) -> Self {
        SendMeter { inner, peer: peer.to_owned(), flows: HashMap::new(), sent, reported: None }
    }

    fn count(&mut self, packet: &TaggedPacket) {
        let Packet::Rtp(rtp) = &packet.message.packet else { return };
        let Some(&flow) = self.flows.get(&rtp.header.ssrc) else { return };
        let bytes = (rtp.header.marshal_size() + rtp.payload.len()) as u64;
        self.sent.counter(flow).fetch_add(bytes, Ordering::Relaxed);
        self.report(packet.now);
    }

    fn report(&mut self, now: Instant) {
        let totals = self.sent.totals();
        let Some((last, at)) = self.reported else {
            self.reported = Some((totals, now));
            return;
        };
        let elapsed = now.saturating_duration_since(at);
        if elapsed < REPORT_EVERY {
            return;
        }
        let kbps = |bytes: u64, before: u64| (bytes - before) * 8 / elapsed.as_millis().max(1) as u64;
        debug!(
            "peer {}: sending video {} kbit/s, repairs {} kbit/s, audio {} kbit/s",
            self.peer,
            kbps(totals.0, last.0),
            kbps(totals.1, last.1),
            kbps(totals.2, last.2)
        );
        self.reported = Some((totals, now));
    }
}

delegate_protocol_to_inner!(SendMeter, poll_write(this) {
    let packet = this.inner.poll_write()?;
    this.count(&packet);
    Some(packet)
});

impl<I: Interceptor> Interceptor for SendMeter<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let primary = if info.mime_type.to_ascii_lowercase().starts_with("audio/") { Flow::Audio } else { Flow::Video };
        self.flows.insert(info.ssrc, primary);
        if let Some(rtx) = info.ssrc_rtx {
            self.flows.insert(rtx, Flow::Repairs);
        }
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.flows.remove(&info.ssrc);
        if let Some(rtx) = info.ssrc_rtx {
            self.flows.remove(&rtx);
        }
        self.inner.unbind_local_stream(info);
    }
    // What comes in is none of this wrapper's business.
    delegate_remote_streams_to_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::NoopInterceptor;
    use rtc::rtp;
    use rtc::sansio::Protocol;
    use rtc::shared::TransportContext;

    fn stream(ssrc: u32, rtx: Option<u32>, mime: &str) -> StreamInfo {
        StreamInfo { ssrc, ssrc_rtx: rtx, mime_type: mime.into(), ..Default::default() }
    }

    fn rtp_packet(ssrc: u32, payload: usize, now: Instant) -> TaggedPacket {
        let packet = rtp::Packet {
            header: rtp::header::Header { ssrc, ..Default::default() },
            payload: vec![0u8; payload].into(),
        };
        TaggedPacket { now, transport: TransportContext::default(), message: Packet::Rtp(packet).into() }
    }

    #[test]
    fn each_kind_is_counted_by_its_ssrc_and_unknown_ones_not_at_all() {
        let sent = Arc::new(SentBytes::default());
        let mut meter = SendMeter::new(NoopInterceptor::new(), "viewer-1", Arc::clone(&sent));
        meter.bind_local_stream(&stream(1, Some(2), "video/H264"));
        meter.bind_local_stream(&stream(3, None, "audio/opus"));
        let now = Instant::now();
        for (ssrc, payload) in [(1, 1000), (2, 500), (3, 100), (9, 700)] {
            meter.handle_write(rtp_packet(ssrc, payload, now)).unwrap();
            while meter.poll_write().is_some() {}
        }
        // A bare RTP header is 12 bytes.
        assert_eq!(sent.totals(), (1012, 512, 112));
    }
}
