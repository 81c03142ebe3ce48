//! SIGTERM / SIGINT: stop accepting, Close 1001 to everyone, exit 0.

use ragnarok_testkit::*;
use serde_json::json;
use std::net::TcpStream;

#[test]
fn signals_close_everyone_with_1001_and_exit_cleanly() {
    for signal in ["TERM", "INT"] {
        for mut server in TestServer::both(json!({})) {
            let mut alice = server.login("alice");
            let mut bob = server.login("bob");
            alice.send_json(broadcast("last words"));
            server.signal(signal);
            let (seen, ending) = bob.recv_until_end();
            assert!(seen.iter().any(|m| m["text"] == "last words"), "{seen:?}");
            assert_eq!(ending.code(), Some(1001));
            let (_, ending) = alice.recv_until_end();
            assert_eq!(ending.code(), Some(1001));
            drop((alice, bob));
            let status = server.wait_exit();
            assert_eq!(status.code(), Some(0), "SIG{signal}");
            server.wait_log("shutdown complete");
            assert!(TcpStream::connect(server.addr).is_err(), "no longer accepting");
        }
    }
}
