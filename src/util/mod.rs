//! Small helpers the rest of roomcam shares: locking a mutex whose holder
//! panicked, keeping repeated warnings out of the journal, and pacing
//! retries.

mod backoff;
mod lock;
mod log_limit;

pub use backoff::Backoff;
pub use lock::lock_ignoring_poison;
pub use log_limit::LogLimit;
pub(crate) use log_limit::warn_limited;
