//! An SDP offer into publish and subscribe.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_sfu::fuzzing::offers(data));
