//! Every `mio::Token` the event loop uses, in one place. Connections use
//! their slab key as their token; everything else sits at the top of the
//! range, where no slab key reaches.

use mio::Token;

/// The listening socket.
pub const LISTENER: Token = Token(usize::MAX);
/// SIGINT, SIGTERM and SIGHUP.
pub const SIGNALS: Token = Token(usize::MAX - 1);
/// The health and metrics listener.
pub const METRICS: Token = Token(usize::MAX - 2);
/// The cluster's command connection to Redis.
pub const REDIS_COMMANDS: Token = Token(usize::MAX - 3);
/// The cluster's subscription connection to Redis.
pub const REDIS_SUBSCRIPTION: Token = Token(usize::MAX - 4);
/// The control socket of `ragnarok ctl`.
pub const CONTROL: Token = Token(usize::MAX - 5);
/// Requests on the metrics listener: slab key + this.
pub const METRICS_REQUESTS: usize = usize::MAX / 2;
/// Requests on the control socket: slab key + this (above the metrics').
pub const CONTROL_REQUESTS: usize = usize::MAX / 4 * 3;

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Listener,
    Signals,
    Metrics,
    /// Either of the cluster's two Redis connections.
    Redis,
    Control,
    MetricsRequest(usize),
    ControlRequest(usize),
    Connection(usize),
}

impl Target {
    pub fn of(token: Token) -> Target {
        match token {
            LISTENER => Target::Listener,
            SIGNALS => Target::Signals,
            METRICS => Target::Metrics,
            REDIS_COMMANDS | REDIS_SUBSCRIPTION => Target::Redis,
            CONTROL => Target::Control,
            Token(key) if key >= CONTROL_REQUESTS => Target::ControlRequest(key - CONTROL_REQUESTS),
            Token(key) if key >= METRICS_REQUESTS => Target::MetricsRequest(key - METRICS_REQUESTS),
            Token(key) => Target::Connection(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_names_one_source() {
        assert_eq!(Target::of(LISTENER), Target::Listener);
        assert_eq!(Target::of(REDIS_SUBSCRIPTION), Target::Redis);
        assert_eq!(Target::of(Token(METRICS_REQUESTS + 3)), Target::MetricsRequest(3));
        assert_eq!(Target::of(CONTROL), Target::Control);
        assert_eq!(Target::of(Token(CONTROL_REQUESTS + 2)), Target::ControlRequest(2));
        assert_eq!(Target::of(Token(7)), Target::Connection(7));
    }
}
