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

/// Logins from one address come at most at `logins_per_minute_per_ip` (a
/// burst of as many, then that rate): past it the name is refused with
/// `too_many_logins` and Close 1008; once the bucket refills, logins work
/// again.
#[test]
fn logins_from_one_address_have_a_rate() {
    let _quiet = quiet();
    for server in TestServer::both(json!({"logins_per_minute_per_ip": 60})) {
        for i in 0..60 {
            drop(server.login(&format!("user{i}")));
        }
        // The burst is spent: the next login is refused. (A slow machine
        // may take over a second for the 60, and a token comes back each
        // second: a few more may pass first, never many.)
        let mut refused = (0..5).find_map(|i| {
            let mut client = server.connect();
            client.send_text(PASSWORD);
            client.send_text(&format!("one_too_many{i}"));
            (client.recv_json()["code"] == "too_many_logins").then_some(client)
        });
        let (_, ending) =
            refused.as_mut().expect("a login refused right after the burst").recv_until_end();
        assert_eq!(ending.code(), Some(1008));
        server.wait_log("login refused: too_many_logins");
        server.wait_log("abuse from 127.0.0.1: too_many_logins");
        // One a second comes back (a deadline, not a measurement).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut client = server.connect();
            client.send_text(PASSWORD);
            client.send_text("later");
            let first = client.recv_json();
            if first["ServerName"] == "Test Room" {
                break;
            }
            assert_eq!(first["code"], "too_many_logins", "{first}");
            assert!(std::time::Instant::now() < deadline, "still refused");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
