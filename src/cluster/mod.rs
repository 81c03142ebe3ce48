//! One room across processes: this node's link to the others through Redis.
//! `event` is what nodes tell each other, `scripts` the Lua that orders it,
//! `link` the state machine (no I/O), `io` its two Redis connections.

mod event;
mod io;
mod link;
mod scripts;

pub use event::{Event, Kept, KeptRules, LocalUser, Origin, Proposed, RemoteUser};
pub use io::Cluster;
pub use link::{ClusterStats, LinkError, MAX_EVENT_BYTES, Note};
