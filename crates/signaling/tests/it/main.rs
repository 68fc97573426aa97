//! Signaling tests against a real server on loopback.

mod conformance;
mod limits;
mod support;
mod whep_ext;
