//! Talking to Redis from the poll loop: the URL, RESP (`resp`), one
//! non-blocking connection (`conn`), and the blocking startup check with
//! the TLS client configuration (`startup`).

pub mod conn;
pub mod resp;
pub mod startup;
pub mod url;

pub use conn::{Conn, ConnError};
pub use resp::{Command, Value};
pub use url::RedisUrl;
