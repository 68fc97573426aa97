//! Datagrams into a worker with a connected publisher and viewer (see lumen_sfu::fuzzing::datagrams for the input format).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_sfu::fuzzing::datagrams(data));
