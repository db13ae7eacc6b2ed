//! Hand-over from the capture thread to the encode thread: a one-picture
//! slot where the latest picture wins (a slow encoder or network drops old
//! pictures instead of queueing them), and an ordered queue for the access
//! units of a camera that encodes H.264 itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::{Counters, bump};
use crate::media::{EncodedVideo, I420Frame};
use crate::util::lock_ignoring_poison;

/// Access units from an H.264 camera waiting to be sent (about half a
/// second). They cannot be skipped like pictures (each depends on the one
/// before), so when the sender falls this far behind the queue is dropped
/// and restarts at the camera's next IDR.
const PASSTHROUGH_QUEUE: usize = 16;

#[derive(Default)]
pub(super) struct Handover {
    slot: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Default)]
struct Slot {
    /// "Latest picture wins": capture overwrites, the encoder takes.
    picture: Option<I420Frame>,
    /// From an H.264 camera, in order.
    access_units: VecDeque<EncodedVideo>,
    /// The queue overflowed: drop until the camera's next IDR.
    access_units_broken: bool,
}

/// What the encode thread gets next.
pub(super) enum Next {
    Picture(I420Frame),
    AccessUnit(EncodedVideo),
}

impl Handover {
    /// Puts a picture in the slot; one still waiting there is dropped.
    pub(super) fn put_frame(&self, frame: I420Frame, counters: &Counters) {
        if lock_ignoring_poison(&self.slot).picture.replace(frame).is_some() {
            bump(&counters.frames_dropped);
        }
        self.ready.notify_one();
    }

    /// Queues a camera's access unit. When the queue overflows it is
    /// dropped and `camera_keyframe_wanted` asks the camera for an IDR.
    pub(super) fn put_access_unit(&self, au: EncodedVideo, counters: &Counters, camera_keyframe_wanted: &AtomicBool) {
        let mut slot = lock_ignoring_poison(&self.slot);
        if slot.access_units.len() >= PASSTHROUGH_QUEUE {
            let dropped = slot.access_units.len() as u64;
            slot.access_units.clear();
            slot.access_units_broken = true;
            counters.frames_dropped.fetch_add(dropped, Ordering::Relaxed);
            camera_keyframe_wanted.store(true, Ordering::Release);
        }
        if slot.access_units_broken && !au.keyframe {
            bump(&counters.frames_dropped);
            return;
        }
        slot.access_units_broken = false;
        // The camera is back: a placeholder still waiting must not go out
        // after its frames (it would cost the viewers a wait for the
        // camera's next IDR).
        if slot.picture.take().is_some() {
            bump(&counters.frames_dropped);
        }
        slot.access_units.push_back(au);
        drop(slot);
        self.ready.notify_one();
    }

    /// Blocks for the next access unit or the newest picture; `None` once
    /// `stop` is set.
    pub(super) fn take(&self, stop: &AtomicBool) -> Option<Next> {
        let mut slot = lock_ignoring_poison(&self.slot);
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            if let Some(au) = slot.access_units.pop_front() {
                return Some(Next::AccessUnit(au));
            }
            if let Some(frame) = slot.picture.take() {
                return Some(Next::Picture(frame));
            }
            // The timeout is only a backstop for the stop flag.
            slot = self.ready.wait_timeout(slot, Duration::from_millis(100)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Wakes a [`take`](Self::take) waiting, after `stop` was set.
    pub(super) fn wake_all(&self) {
        // Taking the lock orders the flag before the wake-up, so the
        // encoder cannot miss it between its check and its wait.
        let _slot = lock_ignoring_poison(&self.slot);
        self.ready.notify_all();
    }
}
