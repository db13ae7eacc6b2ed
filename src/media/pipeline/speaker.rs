//! The speaker thread: talk-back Opus packets → decode (one decoder per
//! viewer) → the newest talker's voice → the speaker.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::talkback::{Floor, FloorChange, VOICE_DBFS};
use super::{Shared, Talker, bump};
use crate::media::AudioSink;
use crate::media::analysis::rms_dbfs;
use crate::media::echo::Reference;
use crate::media::encoders::opus::OpusDecoder;
use crate::util::{LogLimit, warn_limited};

/// A viewer silent this long loses its decoder (it has most likely left).
const TALKER_IDLE: Duration = Duration::from_secs(30);

/// `reference`: where what was played goes, for the echo canceller.
pub(super) fn speaker_loop(
    shared: &Shared,
    rx: &Receiver<(Talker, Bytes)>,
    mut sink: Box<dyn AudioSink>,
    reference: Option<Arc<Reference>>,
) {
    let decode_limit = LogLimit::once_per(Duration::from_secs(5));
    let sink_limit = LogLimit::once_per(Duration::from_secs(10));
    let mut decoders: HashMap<Talker, (OpusDecoder, Instant)> = HashMap::new();
    let mut floor = Floor::default();
    while !shared.stopping() {
        let (talker, packet) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = Instant::now();
        decoders.retain(|_, (_, last)| now.duration_since(*last) < TALKER_IDLE);
        let decoded = match decoders.entry(Arc::clone(&talker)) {
            Entry::Occupied(mut e) => {
                e.get_mut().1 = now;
                e.into_mut().0.decode(&packet)
            }
            Entry::Vacant(e) => match OpusDecoder::new() {
                Ok(decoder) => e.insert((decoder, now)).0.decode(&packet),
                Err(err) => Err(err),
            },
        };
        let pcm = match decoded {
            Ok(pcm) if pcm.is_empty() => continue,
            Ok(pcm) => pcm,
            Err(e) => {
                bump(&shared.counters.talkback_errors);
                warn_limited!(decode_limit, "talk-back from {talker}: dropping bad packet: {e}");
                continue;
            }
        };
        let voice = rms_dbfs(&pcm) > VOICE_DBFS;
        let (play, change) = floor.admit(&talker, voice, now);
        match change {
            Some(FloorChange::Taken { talker, over: Some(over) }) => {
                log::info!("talk-back: {talker} talks over {over}; {over} muted while {talker} talks")
            }
            Some(FloorChange::Taken { talker, over: None }) => log::info!("talk-back: {talker} has the speaker"),
            Some(FloorChange::Released) => log::info!("talk-back: nobody talks"),
            None => {}
        }
        if !play {
            bump(&shared.counters.talkback_muted);
            continue;
        }
        if voice {
            shared.voice_playing();
        }
        match sink.write(&pcm) {
            Ok(()) => {
                if let Some(reference) = &reference {
                    reference.played(&pcm);
                }
            }
            Err(e) => {
                bump(&shared.counters.talkback_errors);
                warn_limited!(sink_limit, "speaker: {e}");
            }
        }
    }
}
