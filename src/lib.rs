//! Ragnarok: a self-hosted WebSocket chatroom server. One thread, one mio
//! poll loop; data flows `server` → `connection` → `room`.

pub mod config;
pub mod connection;
pub mod fdlimit;
pub mod http;
mod names;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod room;
pub mod server;
pub mod tls;
pub mod transport;
