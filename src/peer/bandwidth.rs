//! A viewer's own limit on the video it receives, from the SDP it sends.
//!
//! A page in "data saver" mode puts `b=AS:300` (kbit/s, RFC 4566) and
//! `b=TIAS:300000` (bit/s, RFC 3890) on its video m-section; any WebRTC
//! sender, a browser's included, takes that as a ceiling for what it sends
//! there, and so does roomcam. It travels in the offer or answer itself, so
//! it works through classic servers, which relay the SDP untouched.

/// The lowest video ceiling the description asks for, in bit/s: `b=TIAS`
/// or `b=AS` on a video m-section, or at session level (which bounds every
/// stream). `None` when it asks for none. A zero is ignored: it would stop
/// the video, which no viewer means by it.
pub fn video_ceiling_bps(sdp: &str) -> Option<u64> {
    // Session level until the first m= line.
    let mut in_video_or_session = true;
    let mut ceiling: Option<u64> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(media) = line.strip_prefix("m=") {
            in_video_or_session = media.split(' ').next() == Some("video");
            continue;
        }
        if !in_video_or_session {
            continue;
        }
        let Some(bandwidth) = line.strip_prefix("b=") else { continue };
        let Some((kind, value)) = bandwidth.split_once(':') else { continue };
        let Ok(value) = value.trim().parse::<u64>() else { continue };
        let bps = match kind {
            "TIAS" => value,
            "AS" => value.saturating_mul(1000),
            _ => continue,
        };
        if bps > 0 {
            ceiling = Some(ceiling.map_or(bps, |c| c.min(bps)));
        }
    }
    ceiling
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n";

    fn sdp(session: &str, audio: &str, video: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{session}{AUDIO}{audio}\
             m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\n{video}a=mid:1\r\n"
        )
    }

    #[test]
    fn as_and_tias_on_video() {
        assert_eq!(video_ceiling_bps(&sdp("", "", "b=AS:300\r\n")), Some(300_000));
        assert_eq!(video_ceiling_bps(&sdp("", "", "b=TIAS:250000\r\n")), Some(250_000));
        // Both: the lower wins.
        assert_eq!(video_ceiling_bps(&sdp("", "", "b=AS:300\r\nb=TIAS:280000\r\n")), Some(280_000));
    }

    #[test]
    fn none_audio_only_or_meaningless() {
        assert_eq!(video_ceiling_bps(&sdp("", "", "")), None);
        // On audio only: not a video limit.
        assert_eq!(video_ceiling_bps(&sdp("", "b=AS:64\r\n", "")), None);
        // Other modifiers, zero, garbage.
        assert_eq!(video_ceiling_bps(&sdp("", "", "b=RR:0\r\nb=CT:100\r\nb=AS:0\r\nb=AS:lots\r\nb=AS\r\n")), None);
        assert_eq!(video_ceiling_bps(""), None);
    }

    #[test]
    fn session_level_bounds_video_too() {
        assert_eq!(video_ceiling_bps(&sdp("b=AS:500\r\n", "", "")), Some(500_000));
        assert_eq!(video_ceiling_bps(&sdp("b=AS:500\r\n", "", "b=AS:300\r\n")), Some(300_000));
    }

    #[test]
    fn plain_newlines_and_huge_values() {
        let text = sdp("", "", "b=AS:300\r\n").replace("\r\n", "\n");
        assert_eq!(video_ceiling_bps(&text), Some(300_000));
        assert_eq!(video_ceiling_bps(&sdp("", "", &format!("b=AS:{}\r\n", u64::MAX))), Some(u64::MAX));
    }
}
