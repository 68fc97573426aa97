//! An RTP payload into the H.264, VP8 and VP9 keyframe and picture-size parsers (byte 0 picks the codec).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lumen_sfu::fuzzing::codec_payloads(data));
