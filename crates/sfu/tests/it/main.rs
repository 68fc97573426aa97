//! Scenario tests of the SFU core on a virtual clock: str0m peers play the
//! browsers, a seeded network emulator (str0m-netem) sits on every link, and
//! time jumps to the next event, so a 10 s scenario runs in well under that
//! and the same seed always gives the same run.

mod av1;
mod bad_input;
mod big_offer;
mod channels;
mod cost;
mod fuzz_corpus;
mod half_open;
mod harness;
mod ice_credentials;
mod inject;
mod live;
mod loss;
mod malformed_offers;
mod sessions;
mod simulcast;
mod sinks;
mod squatter;
mod stun_flood;
mod trickle_flood;
mod workers;
