//! One `ragnarok` server over real sockets (ws and wss): login, broadcast,
//! presence, history, private messages, the web page, metrics, config and
//! certificate reload, shutdown, and the hostile tests (floods, slow readers, limits,
//! malformed input). Each module was a test binary of its own; see
//! TESTING.md. The harness is `ragnarok-testkit` (tests/support).

mod admins;
mod binary_flood;
mod broadcast;
mod byte_budget;
mod cert_reload;
mod e2e_room;
mod e2e_scheme;
mod eof_with_last_message;
mod flood;
mod garbage;
mod history;
mod idle;
mod key_relay;
mod log_budget;
mod login;
mod login_frames;
mod login_throttle;
mod malformed;
mod metrics;
mod moderation;
mod names;
mod origins;
mod partial_messages;
mod per_address_limits;
mod ping_flood;
mod plain_http_on_tls;
mod presence;
mod private_message;
mod protocol_violations;
mod reload;
mod resume;
mod resume_attacks;
mod shutdown;
mod slow_reader;
mod stalled_handshake;
mod trusted_proxies;
mod web_page;
mod welcome_at_scale;
