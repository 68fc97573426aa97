//! lumen's UDP syscalls, kept in one crate as quinn keeps them in
//! `quinn-udp`: the media workers send with UDP generic segmentation offload
//! ([`Outbox`]), bind their sockets with large buffers
//! ([`bind_media_socket`]), and the load generator reads trains with UDP
//! GRO and kernel receive timestamps ([`gro`]).
//!
//! Everything here goes through `nix` and `socket2`, so the crate keeps the
//! workspace's `unsafe_code = "forbid"`.
#![deny(missing_docs)]

pub mod gro;
mod gso;
mod socket;

pub use gso::{Datagram, Outbox};
pub use socket::{MEDIA_SOCKET_BUFFER, bind_media_socket};
