//! Getting keyframe requests out of webrtc 0.21's interceptor chain.
//!
//! In 0.21 inbound RTCP stops at the end of the interceptor chain (a
//! `NoopInterceptor` is appended by `Registry::build`), so a sent track's
//! `TrackLocal::poll` never sees a PLI unless an interceptor marks it with
//! `Attribute::DeliverToApplication`. This is that interceptor, reduced to
//! the two packet types roomcam acts on.
//!
//! It also reads REMB on the way past: no stock interceptor consumes REMB
//! (the congestion controller ingests transport-wide and RFC 8888 feedback
//! only), so a viewer that reports REMB alone would otherwise never move its
//! estimate off the start.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::congestion::EstimateSink;

/// Whether any packet of an RTCP compound asks for a keyframe.
pub(crate) fn is_keyframe_request(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
    })
}

/// Marks inbound PLI/FIR for delivery to the application and passes
/// everything else through untouched (the stock interceptors already acted on
/// it, and the chain's end drops it). With an estimate sink (congestion
/// control on), hands it every REMB's bitrate.
#[derive(Default)]
pub(crate) struct KeyframeRequestForwarder {
    remb_sink: Option<Arc<EstimateSink>>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl KeyframeRequestForwarder {
    pub(crate) fn with_remb_sink(remb_sink: Option<Arc<EstimateSink>>) -> Self {
        KeyframeRequestForwarder { remb_sink, ..Default::default() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if let Some(sink) = &self.remb_sink {
                for remb in packets.iter().filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
                {
                    sink.remb(msg.now, f64::from(remb.bitrate));
                }
            }
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> =
                packets.iter().filter(|p| is_keyframe_request(std::slice::from_ref(*p))).cloned().collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    use super::*;

    fn rtcp(now: Instant, packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn remb_reaches_the_sink_and_pli_the_application() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_sink = Arc::clone(&seen);
        let sink = Arc::new(EstimateSink::new(move |bps| seen_by_sink.lock().unwrap().push(bps)));
        let mut forwarder = KeyframeRequestForwarder::with_remb_sink(Some(sink));

        let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: 1, bitrate: 640_000.0, ssrcs: vec![2] };
        forwarder.handle_read(rtcp(Instant::now(), vec![Box::new(remb)])).unwrap();
        assert_eq!(*seen.lock().unwrap(), [640_000]);
        // REMB alone is not for the application.
        assert!(forwarder.poll_read().is_none());

        let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc: 2 };
        forwarder.handle_read(rtcp(Instant::now(), vec![Box::new(pli)])).unwrap();
        let delivered = forwarder.poll_read().expect("PLI delivered");
        assert!(delivered.message.has(&Attribute::DeliverToApplication));
    }
}
