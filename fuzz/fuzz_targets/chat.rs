//! lumen-chat: one frame into `ClientFrame::parse`, then records of frames
//! into a `Room` of five members. The body is `harness/chat.rs`.
#![no_main]

#[path = "../harness/chat.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
