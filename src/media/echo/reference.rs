//! What the speaker played, from the speaker thread to the microphone
//! thread: a bounded queue of samples. Neither side ever waits for the
//! other beyond a copy of one frame (the lock is held for that and
//! nothing else); when the microphone side falls behind, the oldest
//! samples are dropped.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::util::lock_ignoring_poison;

#[derive(Debug)]
pub struct Reference {
    samples: Mutex<VecDeque<i16>>,
    capacity: usize,
}

impl Reference {
    /// Room for `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { samples: Mutex::new(VecDeque::with_capacity(capacity)), capacity }
    }

    /// The speaker's side: `pcm` was just written to the speaker.
    pub fn played(&self, pcm: &[i16]) {
        let pcm = &pcm[pcm.len().saturating_sub(self.capacity)..];
        let mut q = lock_ignoring_poison(&self.samples);
        let over = (q.len() + pcm.len()).saturating_sub(self.capacity);
        if over > 0 {
            q.drain(..over);
        }
        q.extend(pcm.iter().copied());
    }

    /// The microphone's side: the oldest `out.len()` samples played, and
    /// silence for what the speaker did not play (it played nothing then).
    /// Returns how many were played.
    pub fn take(&self, out: &mut [i16]) -> usize {
        let mut q = lock_ignoring_poison(&self.samples);
        let n = q.len().min(out.len());
        for (o, s) in out.iter_mut().zip(q.drain(..n)) {
            *o = s;
        }
        drop(q);
        out[n..].fill(0);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_pads_with_silence_and_drops_the_oldest_when_full() {
        let r = Reference::new(6);
        r.played(&[1, 2, 3]);
        let mut out = [9i16; 4];
        assert_eq!(r.take(&mut out), 3);
        assert_eq!(out, [1, 2, 3, 0]);
        r.played(&[1, 2, 3, 4, 5]);
        // Over capacity by two: the two oldest go.
        r.played(&[6, 7, 8]);
        let mut out = [0i16; 6];
        assert_eq!(r.take(&mut out), 6);
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
        // More than the whole capacity at once: its newest samples.
        r.played(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.take(&mut out), 6);
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
    }
}
