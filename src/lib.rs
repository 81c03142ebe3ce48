//! Ragnarok: a self-hosted WebSocket chatroom server. One thread, one mio
//! poll loop; data flows `server` → `connection` → `session` → `room`.

mod addresses;
pub mod admins;
pub mod cluster;
pub mod config;
mod connection;
pub mod control;
mod drain;
mod effect;
mod endpoint;
pub mod fdlimit;
mod frames;
mod history;
pub mod http;
mod listen;
mod metrics;
pub mod moderation;
mod names;
mod outbox;
mod peerlog;
pub mod protocol;
mod ratelimit;
pub mod redis;
mod resume;
mod room;
pub mod server;
mod session;
pub mod tls;
mod tokens;
pub mod transport;
