//! The control socket: how `inspeqctl` talks to a running `inspeqd`.
//!
//! - `protocol.rs`: the request and response types, one JSON object per line
//!   each way. These are the only serialisable types of the daemon's state.
//! - `server.rs`: the Unix socket listener; each request becomes an event for the
//!   daemon loop, which answers through a oneshot channel.
//! - `client.rs`: one request, one response.

pub mod client;
pub mod protocol;
pub mod server;
