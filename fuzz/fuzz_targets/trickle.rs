//! A trickle-ICE sdpfrag into a live session: candidates and ICE restart.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_sfu::fuzzing::trickle(data));
