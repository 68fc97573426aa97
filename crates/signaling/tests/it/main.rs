//! Signaling tests against a real server on loopback.

mod conformance;
