//! Retransmissions (RTX) get at most a share of the viewer's estimate.
//!
//! webrtc-rs' NACK responder resends a packet every time it is asked. When a
//! link shrinks under the stream, the queue drops a burst; Chrome NACKs every
//! lost packet, and NACKs it again each round trip while the repair is lost
//! in the same full queue. Measured on a 400 kbit/s token bucket
//! (`cargo bench --bench network steps-gcc`): with the video target already
//! down at 150 kbit/s, repairs ran at 500–770 kbit/s for 10 s, the link
//! dropped 900 packets, and the page decoded 0.4 frames a second. libwebrtc
//! caps its retransmission rate too (at the target rate); here it is a third
//! of the estimate, so the new pictures, which are what the viewer waits
//! for, keep most of the path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::shared::marshal::MarshalSize;

use super::congestion::EstimateSink;
use super::wrapped_interceptor::{delegate_protocol_to_inner, delegate_remote_streams_to_inner};

/// The share of the estimate that repairs may use.
pub(crate) const REPAIR_SHARE: f64 = 1.0 / 3.0;
/// How much unused budget may be saved up: repairs come in bursts (a lost
/// burst is NACKed at once), and half a second of budget serves one.
const BURST: Duration = Duration::from_millis(500);
/// Whatever the estimate, a few full packets may always go at once.
const MIN_BURST_BYTES: f64 = 4.0 * 1200.0;

/// A token bucket in bytes whose rate is given at each use. Pure.
#[derive(Debug)]
pub(crate) struct ByteBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl ByteBucket {
    /// Full: the first call finds it at its capacity.
    pub(crate) fn new() -> ByteBucket {
        ByteBucket { tokens: f64::INFINITY, last: None }
    }

    /// Takes `bytes` if the bucket holds them, refilled at `rate_bps` since
    /// the last call.
    pub(crate) fn take(&mut self, now: Instant, bytes: usize, rate_bps: f64) -> bool {
        let bytes_per_second = rate_bps.max(0.0) / 8.0;
        let capacity = (bytes_per_second * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        let elapsed = self.last.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
        self.tokens = (self.tokens + bytes_per_second * elapsed.as_secs_f64()).min(capacity);
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// `inner` (the NACK responder), whose repairs beyond the budget are dropped.
pub(crate) struct RepairBudget<I> {
    inner: I,
    estimate: Arc<EstimateSink>,
    repair_ssrcs: Vec<u32>,
    bucket: ByteBucket,
    dropped: Arc<AtomicU64>,
}

impl<I> RepairBudget<I> {
    /// `dropped` counts the repairs not sent.
    pub(crate) fn new(inner: I, estimate: Arc<EstimateSink>, dropped: Arc<AtomicU64>) -> Self {
        RepairBudget { inner, estimate, repair_ssrcs: Vec::new(), bucket: ByteBucket::new(), dropped }
    }

    fn may_send(&mut self, packet: &TaggedPacket) -> bool {
        let Packet::Rtp(rtp) = &packet.message.packet else { return true };
        if !self.repair_ssrcs.contains(&rtp.header.ssrc) {
            return true;
        }
        // No estimate yet: the start estimate is the ceiling, so nothing to hold back.
        let Some(estimate_bps) = self.estimate.current_bps() else { return true };
        let bytes = rtp.header.marshal_size() + rtp.payload.len();
        self.bucket.take(packet.now, bytes, estimate_bps as f64 * REPAIR_SHARE)
    }
}

delegate_protocol_to_inner!(RepairBudget, poll_write(this) {
    loop {
        let packet = this.inner.poll_write()?;
        if this.may_send(&packet) {
            return Some(packet);
        }
        this.dropped.fetch_add(1, Ordering::Relaxed);
    }
});

impl<I: Interceptor> Interceptor for RepairBudget<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repair_ssrcs.push(rtx);
        }
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repair_ssrcs.retain(|&s| s != rtx);
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_bucket_holds_half_a_second_of_its_rate_and_refills_at_it() {
        let t0 = Instant::now();
        let mut bucket = ByteBucket::new();
        // 240 kbit/s = 30 kB/s: half a second is 15 kB, there from the start.
        assert!(bucket.take(t0, 15_000, 240_000.0));
        assert!(!bucket.take(t0, 1, 240_000.0));
        let mut sent = 0;
        let later = t0 + Duration::from_secs(10);
        while bucket.take(later, 1000, 240_000.0) {
            sent += 1000;
        }
        assert_eq!(sent, 15_000, "ten idle seconds save half a second");
        // 100 ms more: 3 kB.
        assert!(bucket.take(later + ms(100), 3000, 240_000.0));
        assert!(!bucket.take(later + ms(100), 1, 240_000.0));
    }

    #[test]
    fn a_low_rate_still_lets_a_few_packets_through_at_once() {
        let t0 = Instant::now();
        let mut bucket = ByteBucket::new();
        assert!(bucket.take(t0 + Duration::from_secs(5), 4800, 8_000.0));
    }

    fn rtp_packet(ssrc: u32, now: Instant) -> TaggedPacket {
        let packet =
            rtp::Packet { header: rtp::header::Header { ssrc, ..Default::default() }, payload: vec![0u8; 1188].into() };
        TaggedPacket { now, transport: TransportContext::default(), message: Packet::Rtp(packet).into() }
    }

    #[test]
    fn repairs_over_the_budget_are_dropped_and_media_never() {
        let estimate = Arc::new(EstimateSink::new(|_| {}));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut budget = RepairBudget::new(NoopInterceptor::new(), Arc::clone(&estimate), Arc::clone(&dropped));
        budget.bind_local_stream(&StreamInfo { ssrc: 1, ssrc_rtx: Some(2), ..Default::default() });
        let t0 = Instant::now();
        let mut pass = |ssrc: u32, at: Instant| {
            budget.handle_write(rtp_packet(ssrc, at)).unwrap();
            budget.poll_write().is_some()
        };
        // Before any estimate, repairs go.
        assert!((0..20).all(|_| pass(2, t0)));
        // 300 kbit/s: repairs get 100 kbit/s, 6.25 kB in half a second; 1200-byte packets.
        estimate.twcc(t0, 300_000.0);
        let later = t0 + Duration::from_secs(2);
        let repairs = (0..20).filter(|_| pass(2, later)).count();
        assert_eq!(repairs, 5);
        assert_eq!(dropped.load(Ordering::Relaxed), 15);
        assert!((0..20).all(|_| pass(1, later)), "media is never held back");
    }
}
