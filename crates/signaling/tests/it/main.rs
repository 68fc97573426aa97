//! Signaling tests against a real server on loopback.

mod conformance;
mod support;
mod whep_ext;
