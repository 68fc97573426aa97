//! Signaling tests against a real server on loopback.

mod chat;
mod conformance;
mod limits;
mod postgres;
mod schemathesis;
mod support;
mod tls;
mod webhooks;
mod whep_ext;
