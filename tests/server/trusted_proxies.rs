//! Behind a reverse proxy (`trusted_proxies`), `X-Forwarded-For` names the
//! client for the log and for every per-address limit, and the proxy's own
//! address is never limited as one client. From any other peer the header
//! is ignored and its address appears nowhere in the log.

use ragnarok_testkit::*;
use serde_json::json;

const XFF: &str = "X-Forwarded-For";

#[test]
fn a_trusted_proxy_names_the_client() {
    let config = json!({"trusted_proxies": ["127.0.0.1"], "max_connections_per_ip": 2});
    for server in TestServer::both(config) {
        let carol = server.connect_with(&[(XFF, "203.0.113.9")]);
        let _carol = server.log_in(carol, "carol");
        server.wait_log("203.0.113.9 (via proxy): \"carol\" logged in");

        // The limit applies to the named client, not to the proxy.
        let _second = server.log_in(server.connect_with(&[(XFF, "203.0.113.9")]), "carol2");
        let mut third = server.connect_with(&[(XFF, "203.0.113.9")]);
        let (seen, ending) = third.recv_until_end();
        assert_eq!(seen[0]["code"], "too_many_connections", "{seen:?}");
        assert_eq!(ending.code(), Some(1008));
        for i in 0..3 {
            let other = server.connect_with(&[(XFF, &format!("198.51.100.{i}"))]);
            server.log_in(other, &format!("other{i}"));
        }
    }
}

#[test]
fn an_untrusted_peer_cannot_name_anyone() {
    for server in TestServer::both(json!({})) {
        let mallory = server.connect_with(&[(XFF, "192.0.2.66"), ("Forwarded", "for=192.0.2.67")]);
        let _mallory = server.log_in(mallory, "mallory");
        server.wait_log("\"mallory\" logged in");
        let log = server.log().join("\n");
        assert!(!log.contains("192.0.2.66") && !log.contains("192.0.2.67"), "{log}");
        assert!(log.contains("127.0.0.1:"), "{log}");
    }
}

/// A trusted proxy that names no client is charged to its own address:
/// otherwise its connections would be counted nowhere.
#[test]
fn a_trusted_proxy_naming_no_one_is_charged_to_its_own_address() {
    let config = json!({"trusted_proxies": ["127.0.0.1"], "max_connections_per_ip": 2});
    for server in TestServer::both(config) {
        let _first = server.login("first");
        let _second = server.login("second");
        let mut third = server.connect();
        let (seen, ending) = third.recv_until_end();
        assert_eq!(seen[0]["code"], "too_many_connections", "{seen:?}");
        assert_eq!(ending.code(), Some(1008));
        // A client the proxy names is still its own, not the proxy's.
        let named = server.connect_with(&[(XFF, "203.0.113.10")]);
        let _named = server.log_in(named, "named");
    }
}
