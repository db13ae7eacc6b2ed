//! Small helpers the rest of roomcam shares: locking a mutex whose holder
//! panicked, keeping repeated warnings out of the journal, pacing
//! retries, and the TLS client set-up outgoing connections share.

mod backoff;
mod lock;
mod log_limit;
mod tls_client;

pub use backoff::Backoff;
pub use lock::lock_ignoring_poison;
pub use log_limit::LogLimit;
pub(crate) use log_limit::warn_limited;
pub use tls_client::client_config;
