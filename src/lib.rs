//! lumen as a library: the pieces the binary and the end-to-end tests share.

pub mod bench;
pub mod client;
pub mod impair;
pub mod load;
