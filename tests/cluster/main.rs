//! Several `ragnarok` nodes through a real `redis-server` (the `cluster`
//! modules), the Redis client against a real Redis (`redis_conn`), and
//! several processes on one port (`reuse_port`). Each module was a test
//! binary of its own; see TESTING.md. Without `redis-server` on the PATH
//! these tests fail, saying how to install it.

mod broadcast_order;
mod byte_budget;
mod e2e_private;
mod e2e_room;
mod history;
mod login_burst;
mod message_size;
mod moderation;
mod names;
mod node_kill;
mod presence;
mod private_message;
mod redis_conn;
mod redis_interference;
mod redis_restart;
mod redis_stop;
mod redis_unavailable;
mod rediss;
mod resume;
mod resume_attacks;
mod reuse_port;
