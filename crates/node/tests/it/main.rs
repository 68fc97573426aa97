//! lumen-node's integration tests: a node's workers on real loopback
//! sockets, commanded through a `NodeHandle`, offers made by str0m acting as
//! a browser.

mod channels;
mod placement;
mod sinks;
