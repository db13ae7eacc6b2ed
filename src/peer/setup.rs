//! How a roomcam peer connection is configured: codecs, interceptors, ICE
//! settings and the local sockets it binds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, PacerBuilder, Registry, Slot,
    TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::configuration::{RTCConfiguration, RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp_transceiver::PayloadType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_GOOG_REMB, TYPE_RTCP_FB_TRANSPORT_CC,
};

use super::congestion::{CongestionSettings, EstimateSink, ReportingGcc};
use super::repair_budget::RepairBudget;
use super::repair_flows::WithRepairFlows;
use super::rtcp::KeyframeRequestForwarder;
use super::send_meter::{SendMeter, SentBytes};
use super::{PeerError, PeerSettings};

/// The transport-wide sequence number header extension TWCC feedback refers to.
pub const TRANSPORT_CC_URI: &str = rtc::sdp::extmap::TRANSPORT_CC_URI;

/// The only video format roomcam sends: constrained baseline, level 3.1,
/// non-interleaved. Every browser decodes it, and a Pi's encoders produce it.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The header extension by which a sender asks the receiver's jitter buffer
/// for a playout delay range (Chrome honours it on video).
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// Chrome's usual payload types; used when roomcam offers, irrelevant when it answers.
const H264_PAYLOAD_TYPE: PayloadType = 102;
const RTX_PAYLOAD_TYPE: PayloadType = 103;
const OPUS_PAYLOAD_TYPE: PayloadType = 111;

/// Slot of the keyframe-request forwarder: after every stock interceptor
/// (the highest stock slot is the jitter buffer at 13_000), so they have all
/// seen the RTCP before it marks PLI/FIR for the application.
const FORWARDER_SLOT: usize = 14_000;

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() }
}

pub(crate) fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        // Without "nack pli" / "ccm fir" in the SDP a browser never asks for
        // a keyframe, and a viewer that lost one stays frozen.
        rtcp_feedback: vec![feedback("nack", ""), feedback("nack", "pli"), feedback("ccm", "fir")],
    }
}

/// Retransmissions on a flow of their own (RFC 4588): the receiver can tell a
/// repair from a late original, and Chrome counts them
/// (`retransmittedPacketsReceived`). Without it a NACKed packet is resent
/// as the original, which Chrome also accepts.
fn rtx_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RTX.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!("apt={H264_PAYLOAD_TYPE}"),
        rtcp_feedback: vec![],
    }
}

pub(crate) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        // Opus is always "opus/48000/2" in SDP, even when the content is mono.
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Congestion control for one peer connection: its settings and where its
/// estimates go.
pub(crate) struct CongestionSetup<'a> {
    pub settings: &'a CongestionSettings,
    pub estimates: Arc<EstimateSink>,
}

/// Registers exactly one video codec: the answer to a browser that offers
/// VP8/VP9/AV1 and a dozen H.264 variants then contains only the H.264 entry
/// whose packetization-mode and profile (42e0) match; rtc keeps only exact
/// fmtp matches when there is at least one.
///
/// Sent packets kept per stream for retransmission on NACK (a power of two).
/// webrtc-rs keeps 1024 by default: at a low rate that is many seconds of
/// video, and when a link shrinks under a stream, the burst lost before the
/// estimate catches up is NACKed (and NACKed again, each retry lost in the
/// full queue too) for as long as the history holds it, so retransmissions
/// of pictures long shown keep the link full and the new pictures wait
/// behind them (measured on a 500 kbit/s token bucket: a few frames a second
/// for half a minute). 64 packets is about half a second at 1.5 Mbit/s:
/// what a receiver can still use.
const NACK_HISTORY_PACKETS: u16 = 64;

/// Where the bytes sent to a viewer are counted (see [`SendMeter`]).
pub(crate) struct Metering<'a> {
    pub(crate) peer: &'a str,
    pub(crate) sent: Arc<SentBytes>,
    /// Repairs over the budget ([`RepairBudget`]), counted.
    pub(crate) repairs_dropped: Arc<AtomicU64>,
}

/// The interceptors are `register_default_interceptors`' (NACK, RTCP reports,
/// the simulcast header extensions, the transport-wide CC *receiver*) with
/// the receiver moved under congestion control: with it off no transport-wide
/// CC is negotiated at all. With it on, the chain `configure_congestion_control`
/// would build, assembled here because that helper starts its pacer at a fixed
/// 1 Mbit/s that it leaves only when the estimate first *changes* (an estimate
/// that starts at the ceiling and stays there would pace a 2 Mbit/s stream at 1
/// Mbit/s forever), and because combined with the defaults it registers the
/// TWCC receiver twice (a warning per peer).
///
/// `playout_delay`: whether to negotiate the playout-delay extension on video.
pub(crate) fn media_engine_and_interceptors(
    congestion: Option<CongestionSetup<'_>>,
    playout_delay: bool,
    meter: Metering<'_>,
) -> Result<(MediaEngine, Registry), PeerError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters { rtp_codec: h264_codec(), payload_type: H264_PAYLOAD_TYPE },
            RtpCodecKind::Video,
        )
        .map_err(|e| PeerError::WebRtc(format!("register H.264: {e}")))?;
    media_engine
        .register_codec(
            RTCRtpCodecParameters { rtp_codec: rtx_codec(), payload_type: RTX_PAYLOAD_TYPE },
            RtpCodecKind::Video,
        )
        .map_err(|e| PeerError::WebRtc(format!("register RTX: {e}")))?;
    media_engine
        .register_codec(
            RTCRtpCodecParameters { rtp_codec: opus_codec(), payload_type: OPUS_PAYLOAD_TYPE },
            RtpCodecKind::Audio,
        )
        .map_err(|e| PeerError::WebRtc(format!("register Opus: {e}")))?;

    // Feedback registration must come after the codecs: it adds to the codecs
    // registered so far.
    let interceptors = |e: rtc::shared::error::Error| PeerError::WebRtc(format!("interceptors: {e}"));
    // NACK as `configure_nack` sets it up (the feedback is already in the
    // codecs), but with a short send history: see NACK_HISTORY_PACKETS.
    // Repairs are held to a share of the estimate, where there is one.
    let responder = NackResponderBuilder::new().with_size(NACK_HISTORY_PACKETS).build();
    let registry = match &congestion {
        Some(setup) => Registry::new().with(
            Slot::NackResponder,
            SendMeter::new(
                RepairBudget::new(responder, Arc::clone(&setup.estimates), meter.repairs_dropped),
                meter.peer,
                meter.sent,
            ),
        ),
        None => Registry::new().with(Slot::NackResponder, SendMeter::new(responder, meter.peer, meter.sent)),
    }
    .with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    configure_simulcast_extension_headers(&mut media_engine).map_err(interceptors)?;
    if playout_delay {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: PLAYOUT_DELAY_URI.to_owned() },
                RtpCodecKind::Video,
                None,
            )
            .map_err(interceptors)?;
    }
    let registry = configure_rtcp_reports(registry);

    let (registry, remb_sink) = match congestion {
        None => (registry, None),
        Some(CongestionSetup { settings, estimates }) => {
            negotiate_congestion_feedback(&mut media_engine).map_err(interceptors)?;
            let registry = registry
                .with(
                    Slot::CongestionControl,
                    WithRepairFlows::new(
                        CongestionControlBuilder::new(ReportingGcc::new(settings, Arc::clone(&estimates))).build(),
                    ),
                )
                .with(Slot::TwccSender, WithRepairFlows::new(TwccSenderBuilder::new().build()))
                .with(Slot::Pacer, PacerBuilder::new().with_target_bitrate(settings.initial_pacing_bps()).build())
                // What we receive (talk-back) is reported too, for the viewer's own estimator.
                .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
            (registry, Some(estimates))
        }
    };
    // Inbound RTCP ends inside the interceptor chain unless an interceptor
    // marks it for the application; this one marks PLI and FIR (and reads REMB).
    let registry = registry.with(Slot::from(FORWARDER_SLOT), KeyframeRequestForwarder::with_remb_sink(remb_sink));
    Ok((media_engine, registry))
}

/// `a=extmap:… transport-wide-cc…` and `a=rtcp-fb:PT transport-cc` on video
/// and audio (Chrome offers both on both; it sends transport-wide feedback
/// only for what was negotiated, and numbering audio too lets the estimate
/// count audio's share of the path), and `goog-remb` on video for a viewer that
/// estimates on its side and reports REMB instead (Chrome sends no REMB once
/// transport-cc is negotiated).
fn negotiate_congestion_feedback(media_engine: &mut MediaEngine) -> Result<(), rtc::shared::error::Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_feedback(feedback(TYPE_RTCP_FB_TRANSPORT_CC, ""), kind);
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: TRANSPORT_CC_URI.to_owned() },
            kind,
            None,
        )?;
    }
    media_engine.register_feedback(feedback(TYPE_RTCP_FB_GOOG_REMB, ""), RtpCodecKind::Video);
    Ok(())
}

/// `mdns`: whether to resolve the `.local` host candidates browsers send
/// when the page has no media permission (QueryOnly, webrtc's default).
const ICE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

pub(crate) fn setting_engine(settings: &PeerSettings, mdns: bool) -> SettingEngine {
    let mode = if mdns { MulticastDnsMode::QueryOnly } else { MulticastDnsMode::Disabled };
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(mode)
        // Stored but not read by webrtc/rtc 0.21.1 (loopback candidates come
        // only from what `udp_bind_addrs` binds); set anyway so the intent
        // holds if a later release starts honouring it.
        .with_include_loopback_candidate(settings.include_loopback)
        // An ICE restart is how roomcam recovers a viewer whose network path
        // changed; only a rebind picks up the interface addresses the board has
        // now (webrtc#868/#874), keeping the old sockets would re-check the
        // dead path.
        .with_discard_local_candidates_during_ice_restart(true)
        // RFC 8445's pacing (Ta) is 50 ms; webrtc-rs' default 200 ms tick
        // delays nomination, and so the first picture, by up to that much.
        // 28 attempts keep the default ~1.4 s per candidate pair.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(28))
        // A viewer's first check often arrives before its trickled candidate,
        // so we learn it as peer-reflexive; webrtc-rs then waits 1 s before
        // nominating such a pair (seen as 1.1 s joins in the join bench). The
        // pair has just proven to work both ways: nominate it at once.
        .with_prflx_acceptance_min_wait(Some(std::time::Duration::ZERO))
        .build()
}

pub(crate) fn configuration(settings: &PeerSettings) -> RTCConfiguration {
    let ice_servers = settings
        .ice_servers
        .iter()
        .filter(|s| !s.urls.is_empty())
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let policy = if settings.relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    RTCConfigurationBuilder::new().with_ice_servers(ice_servers).with_ice_transport_policy(policy).build()
}

/// Which address families have a usable (non-loopback, non-link-local)
/// interface, and the IPv4 link-local (169.254/16) addresses the host has.
///
/// A board cabled straight to a laptop, or on a network without DHCP, has
/// only a 169.254 address (zeroconf), and a viewer there reaches it on that
/// address alone. webrtc-rs skips link-local addresses when it expands a
/// wildcard bind, so they are bound one by one. (IPv6 link-local stays out:
/// every interface has one, and candidates would need a scope id.)
#[derive(Clone, Debug, Default)]
pub(crate) struct LanInterfaces {
    pub v4: bool,
    pub v6: bool,
    pub link_local_v4: Vec<Ipv4Addr>,
}

impl LanInterfaces {
    pub(crate) fn detect() -> Self {
        let addrs: Vec<IpAddr> = match rtc::shared::ifaces::ifaces() {
            Ok(list) => list.into_iter().filter_map(|i| i.addr.map(|a| a.ip())).collect(),
            Err(e) => {
                log::warn!("cannot list network interfaces ({e}); assuming an IPv4 LAN");
                return Self { v4: true, v6: false, link_local_v4: Vec::new() };
            }
        };
        let usable = |v4: bool| {
            addrs.iter().any(|ip| ip.is_ipv4() == v4 && !ip.is_loopback() && !ip.is_unspecified() && !is_link_local(ip))
        };
        let mut link_local_v4: Vec<Ipv4Addr> = addrs
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if v4.is_link_local() => Some(*v4),
                _ => None,
            })
            .collect();
        link_local_v4.sort();
        link_local_v4.dedup();
        Self { v4: usable(true), v6: usable(false), link_local_v4 }
    }

    /// Whether a peer elsewhere can reach us directly (and mDNS is worth it).
    pub(crate) fn any(&self) -> bool {
        self.v4 || self.v6 || !self.link_local_v4.is_empty()
    }
}

/// The local UDP addresses to bind.
///
/// webrtc 0.21 derives host candidates from the bound sockets only. It expands
/// a wildcard into one socket per interface but skips loopback, and when no
/// other interface exists it binds the wildcard itself, which yields a useless
/// `0.0.0.0` candidate. So loopback must be bound explicitly, and the wildcard
/// only when there is a real interface for it to expand into (or when nothing
/// else would be bound: a relay can still work from a wildcard socket).
pub(crate) fn udp_bind_addrs(lan: &LanInterfaces, include_loopback: bool) -> Vec<String> {
    let mut addrs = Vec::new();
    if lan.v4 || (!include_loopback && lan.link_local_v4.is_empty()) {
        addrs.push("0.0.0.0:0".to_owned());
    }
    addrs.extend(lan.link_local_v4.iter().map(|ip| format!("{ip}:0")));
    if lan.v6 {
        addrs.push("[::]:0".to_owned());
    }
    if include_loopback {
        addrs.push("127.0.0.1:0".to_owned());
    }
    addrs
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_bound_explicitly_when_asked() {
        let lan = LanInterfaces { v4: true, v6: false, link_local_v4: Vec::new() };
        assert_eq!(udp_bind_addrs(&lan, true), ["0.0.0.0:0", "127.0.0.1:0"]);
        assert_eq!(udp_bind_addrs(&lan, false), ["0.0.0.0:0"]);
        // Only loopback: no wildcard, it would become a 0.0.0.0 candidate.
        let none = LanInterfaces::default();
        assert_eq!(udp_bind_addrs(&none, true), ["127.0.0.1:0"]);
        // Offline without loopback: the wildcard, for a relay.
        assert_eq!(udp_bind_addrs(&none, false), ["0.0.0.0:0"]);
    }

    #[test]
    fn link_local_addresses_are_bound_one_by_one() {
        let ip: Ipv4Addr = "169.254.10.1".parse().unwrap();
        // Only a 169.254 address (a board cabled to a laptop): it, and no wildcard.
        let zeroconf = LanInterfaces { v4: false, v6: false, link_local_v4: vec![ip] };
        assert!(zeroconf.any());
        assert_eq!(udp_bind_addrs(&zeroconf, true), ["169.254.10.1:0", "127.0.0.1:0"]);
        assert_eq!(udp_bind_addrs(&zeroconf, false), ["169.254.10.1:0"]);
        // Beside a routable LAN: the wildcard skips it, so it is added.
        let both = LanInterfaces { v4: true, v6: false, link_local_v4: vec![ip] };
        assert_eq!(udp_bind_addrs(&both, false), ["0.0.0.0:0", "169.254.10.1:0"]);
    }

    #[test]
    fn ice_servers_keep_their_credentials() {
        let settings = PeerSettings {
            ice_servers: vec![
                super::super::IceServer {
                    urls: vec!["turn:turn.example.org:3478".into()],
                    username: Some("u".into()),
                    credential: Some("p".into()),
                },
                super::super::IceServer::default(),
            ],
            include_loopback: false,
            congestion: None,
            playout_delay: None,
            relay_only: true,
            measure_every: None,
            trickle: true,
        };
        let config = configuration(&settings);
        assert_eq!(config.ice_transport_policy(), RTCIceTransportPolicy::Relay);
        let servers = config.ice_servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].username, "u");
        assert_eq!(servers[0].credential, "p");
    }
}
