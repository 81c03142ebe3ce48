//! Talking to Redis from the poll loop: the URL, and (in `conn`) one
//! non-blocking connection that encodes commands and decodes replies.

pub mod conn;
pub mod url;

pub use conn::{Conn, ConnError, Value};
pub use url::RedisUrl;
