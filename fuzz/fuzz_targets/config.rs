//! Arbitrary UTF-8 into `Config::parse`, the reader of `config.json`.
//!
//! Checks: no panic, including while formatting the error (the one line an
//! operator sees on stderr); an error message names something and fits on
//! one line; a config that parses keeps the invariants the server relies on.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ragnarok::config::Config;

fuzz_target!(|text: &str| {
    let base = Path::new("/etc/ragnarok");
    match Config::parse(text, base) {
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
        }
        Ok(c) => {
            if let Some(tls) = &c.tls {
                assert!(tls.cert.starts_with(base) || tls.cert.is_absolute());
                assert!(tls.key.starts_with(base) || tls.key.is_absolute());
            }
            assert!(!c.server_ip.trim().is_empty());
            let l = &c.limits;
            assert!(l.max_connections >= 1);
            assert!(l.max_message_bytes >= 64);
            assert!(l.max_outbound_bytes >= 4096);
            assert!(l.rate_limit_per_sec == 0 || l.rate_limit_burst >= 1);
            assert!(
                l.rate_limit_bytes_per_sec == 0
                    || l.rate_limit_bytes_burst as usize >= l.max_message_bytes
            );
            assert!(c.history_max_bytes <= l.max_outbound_bytes / 2);
            assert!(l.handshake_timeout.as_secs() >= 1);
        }
    }
});
