#![no_main]
//! The TOML configuration file, alone and under the board profiles.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roomcam::fuzzing::config_file(data));
