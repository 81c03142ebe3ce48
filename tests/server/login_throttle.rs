//! Password guessing is throttled per address: past
//! `login_attempts_per_minute` wrong passwords, even the right one is
//! refused unchecked with `too_many_attempts` and Close 1008.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn wrong_passwords_lock_the_address_out_for_a_minute() {
    for server in TestServer::both(json!({"login_attempts_per_minute": 3})) {
        for guess in ["000", "111", "222"] {
            let mut client = server.connect();
            client.send_text(guess);
            let (seen, ending) = client.recv_until_end();
            assert_eq!(seen[0]["code"], "wrong_password");
            assert_eq!(ending.code(), Some(1008));
        }
        let mut client = server.connect();
        client.send_text(PASSWORD);
        let (seen, ending) = client.recv_until_end();
        assert_eq!(seen[0]["code"], "too_many_attempts", "{seen:?}");
        assert_eq!(ending.code(), Some(1008));
        let line = server.wait_log("abuse from 127.0.0.1: too_many_attempts");
        assert!(line.contains("WARN"), "{line}");
    }
}
