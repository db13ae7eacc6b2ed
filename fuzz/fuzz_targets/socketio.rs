#![no_main]
//! A socket.io 2 / 4 server's WebSocket text frame: Engine.IO and socket.io decode.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::fuzzing::socketio_frame(data));
