//! The microphone thread (`audio`): reads 20 ms frames and, while somebody
//! watches, encodes them to Opus and broadcasts them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{DeviceRetry, Shared, bump};
use crate::media::encoders::opus::OpusEncoder;
use crate::media::{AUDIO_FRAME_SAMPLES, AudioSource, EncodedAudio};
use crate::util::{LogLimit, warn_limited};

pub(super) fn microphone_loop(
    shared: &Shared,
    source: &mut dyn AudioSource,
    opus: &mut OpusEncoder,
    tx: &broadcast::Sender<EncodedAudio>,
) {
    let mut retry = DeviceRetry::new(DeviceRetry::MAX);
    let limit = LogLimit::once_per(Duration::from_secs(10));
    let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
    while !shared.stopping() {
        if let Err(e) = source.read_frame(&mut pcm) {
            if !retry.failed(shared, "microphone", &e) {
                break;
            }
            continue;
        }
        retry.reset();
        if shared.viewers.load(Ordering::Acquire) == 0 {
            continue;
        }
        match opus.encode(&pcm) {
            Ok(packet) => {
                bump(&shared.counters.audio_packets);
                let _ = tx.send(packet);
            }
            Err(e) => warn_limited!(limit, "audio encoder: {e}"),
        }
    }
}
