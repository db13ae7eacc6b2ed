//! The microphone thread (`audio`): reads 20 ms frames, cancels the
//! speaker's echo from them (talk-back), listens to them for sound alerts,
//! and, while somebody watches, encodes them to Opus and broadcasts them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{DeviceRetry, Shared, SoundAlerts, bump};
use crate::alerts::{LEVEL_INTERVAL, RoomSound, SoundDetector, SoundEvent, SoundTap};
use crate::media::AUDIO_SAMPLE_RATE;
use crate::media::echo::EchoRemoval;
use crate::media::encoders::opus::OpusEncoder;
use crate::media::{AUDIO_FRAME_SAMPLES, AudioSource, EncodedAudio};
use crate::util::{LogLimit, warn_limited};

/// How long after a viewer's voice the microphone may still hear it (the
/// speaker's buffer and the room's echo); without echo cancellation the
/// sound detector does not listen then.
const SPEAKER_ECHO: Duration = Duration::from_secs(1);

pub(super) fn microphone_loop(
    shared: &Shared,
    source: &mut dyn AudioSource,
    opus: &mut OpusEncoder,
    tx: &broadcast::Sender<EncodedAudio>,
    mut listener: Option<&mut Listener>,
    mut echo: Option<&mut EchoRemoval>,
) {
    let mut retry = DeviceRetry::new(DeviceRetry::MAX);
    let limit = LogLimit::once_per(Duration::from_secs(10));
    let echo_limit = LogLimit::once_per(Duration::from_secs(10));
    let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
    while !shared.stopping() {
        if let Err(e) = source.read_frame(&mut pcm) {
            if !retry.failed(shared, "microphone", &e) {
                break;
            }
            continue;
        }
        retry.reset();
        // Before the detector and the encoder: neither hears the speaker.
        if let Some(echo) = echo.as_deref_mut()
            && let Err(e) = echo.process(&mut pcm)
        {
            warn_limited!(echo_limit, "{e}");
        }
        if let Some(listener) = listener.as_deref_mut()
            && listener.hear(&pcm, echo.is_none() && shared.voice_played_within(SPEAKER_ECHO))
        {
            bump(&shared.counters.sound_alerts);
        }
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

/// The sound detector of a room, and where its alerts and level go.
pub(super) struct Listener {
    room: String,
    detector: SoundDetector,
    events: SoundTap,
    /// The loudest frame since the last level told, and how many frames.
    level_peak_db: f32,
    level_frames: usize,
}

const LEVEL_FRAMES: usize =
    (LEVEL_INTERVAL.as_millis() as usize * AUDIO_SAMPLE_RATE as usize / 1000) / AUDIO_FRAME_SAMPLES;

impl Listener {
    pub(super) fn new(alerts: SoundAlerts, events: SoundTap) -> Listener {
        Listener {
            room: alerts.room,
            detector: SoundDetector::new(alerts.detector),
            events,
            level_peak_db: f32::NEG_INFINITY,
            level_frames: 0,
        }
    }

    /// One frame of the room (echo-cancelled if the pipeline cancels echo);
    /// `talk_back` while the speaker plays (or just played) a viewer's voice
    /// and there is no echo cancellation: such a frame is not listened to,
    /// as the parent's own voice would raise the alert. True when an alert
    /// starts with this frame.
    fn hear(&mut self, pcm: &[i16; AUDIO_FRAME_SAMPLES], talk_back: bool) -> bool {
        if talk_back {
            self.level_frames = 0;
            self.level_peak_db = f32::NEG_INFINITY;
            return false;
        }
        let event = self.detector.feed(pcm);
        self.level_peak_db = self.level_peak_db.max(self.detector.level_db());
        self.level_frames += 1;
        if self.level_frames >= LEVEL_FRAMES {
            self.events.tell(RoomSound::Level { level_db: self.level_peak_db });
            self.level_frames = 0;
            self.level_peak_db = f32::NEG_INFINITY;
        }
        let Some(event) = event else { return false };
        let started = matches!(event, SoundEvent::Started { .. });
        match event {
            SoundEvent::Started { level_db, floor_db } => log::info!(
                "room {}: sound alert: {level_db:.0} dBFS in the voice band, {:.0} dB over the room's floor",
                self.room,
                level_db - floor_db
            ),
            SoundEvent::Ended { peak_db } => {
                log::info!("room {}: sound alert ended (peak {peak_db:.0} dBFS)", self.room)
            }
        }
        self.events.tell(RoomSound::Alert(event));
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::DetectorSettings;

    /// Feeds 2 s of near silence, then 3 s of a loud 450 Hz voice-like tone.
    fn loud_after_quiet(listener: &mut Listener, talk_back: bool) -> Vec<RoomSound> {
        let mut rx = listener.events.subscribe();
        let mut phase = 0.0f32;
        for n in 0..250 {
            let amplitude = if n < 100 { 30.0 } else { 12_000.0 };
            let mut pcm = [0i16; AUDIO_FRAME_SAMPLES];
            for s in pcm.iter_mut() {
                phase += 2.0 * std::f32::consts::PI * 450.0 / 48_000.0;
                *s = (amplitude * phase.sin()) as i16;
            }
            listener.hear(&pcm, talk_back && n >= 100);
        }
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn alerts_in(heard: &[RoomSound]) -> Vec<SoundEvent> {
        heard.iter().filter_map(|h| if let RoomSound::Alert(a) = h { Some(*a) } else { None }).collect()
    }

    fn levels(heard: &[RoomSound]) -> Vec<f32> {
        heard
            .iter()
            .filter_map(|h| if let RoomSound::Level { level_db } = h { Some(*level_db) } else { None })
            .collect()
    }

    #[test]
    fn a_viewers_voice_from_the_speaker_raises_no_alert() {
        let alerts = SoundAlerts { room: "nursery".into(), detector: DetectorSettings::default() };
        let events = SoundTap::default();
        let mut talking = Listener::new(alerts.clone(), events.clone());
        let heard = loud_after_quiet(&mut talking, true);
        assert_eq!(alerts_in(&heard), []);
        // 2 s before the voice: 8 levels, none while it plays.
        assert_eq!(levels(&heard).len(), 8, "{heard:?}");
        let mut quiet_speaker = Listener::new(alerts, events);
        let heard = loud_after_quiet(&mut quiet_speaker, false);
        assert!(matches!(alerts_in(&heard).as_slice(), [SoundEvent::Started { .. }]), "{heard:?}");
    }

    #[test]
    fn the_level_is_told_four_times_a_second_with_the_loudest_frame() {
        let alerts = SoundAlerts { room: "nursery".into(), detector: DetectorSettings::default() };
        let events = SoundTap::default();
        let mut listener = Listener::new(alerts, events);
        let levels = levels(&loud_after_quiet(&mut listener, false));
        // 5 s of sound: 20 levels, quiet (the 30/32768 tone) then loud.
        assert_eq!(levels.len(), 20, "{levels:?}");
        assert!(levels[..8].iter().all(|&l| l < -50.0), "{levels:?}");
        assert!(levels[8..].iter().all(|&l| l > -15.0), "{levels:?}");
    }
}
