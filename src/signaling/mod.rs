//! Signaling: the socket.io room protocol (`PROTOCOL.md`), as a client for the
//! device and as roomcam's own server.

pub mod client;
pub mod codec;
pub mod limits;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod turn_credentials;
