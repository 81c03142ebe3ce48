//! Whatever a client sends, its share of the log stays a few lines a
//! minute: refusals are logged once per interval with a count.

use ragnarok_testkit::*;
use serde_json::json;
use tungstenite::Message;

#[test]
fn ten_thousand_refusals_make_one_log_line() {
    let _busy = busy(); // loads the machine
    // The rates off: the refusals are for what is sent, not how fast.
    for server in TestServer::both(json!({"rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0}))
    {
        let (mut alice, mut bob) = server.login_two("alice", "bob");
        let port = alice.ws.get_ref().tcp().local_addr().unwrap().port().to_string();
        let before = server.log().len();
        for i in 0..10_000 {
            match i % 4 {
                0 => alice.send_text("not json"),
                1 => alice.send(Message::binary(vec![1, 2, 3])),
                2 => alice.send_json(json!({"msgType": "x".repeat(1000)})),
                _ => alice.send_json(
                    json!({"msgType": "PrivateMessage", "TgtUser": "nobody", "text": "x"}),
                ),
            }
            if i % 100 == 99 {
                // Read the replies so that this is not a slow reader.
                for _ in 0..100 {
                    alice.recv_json();
                }
            }
        }
        alice.send_json(broadcast("done"));
        assert_eq!(bob.recv_json()["text"], "done");
        let lines: Vec<_> = server.log().into_iter().skip(before).collect();
        let from_alice = lines.iter().filter(|l| l.contains(&port)).count();
        assert!(from_alice <= 2, "{from_alice} lines for 10,000 refusals: {lines:#?}");
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        assert!(bytes < 1000, "{bytes} bytes of log");
    }
}

/// Runs `attempt` from `threads` threads (one address: 127.0.0.1) for
/// `secs` seconds; the attempts made and the bytes of log written meanwhile.
fn hammer(
    server: &TestServer,
    threads: usize,
    secs: u64,
    attempt: impl Fn(&TestServer, usize) + Sync,
) -> (usize, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let log_bytes = |s: &TestServer| s.log().iter().map(|l| l.len() + 1).sum::<usize>();
    let before = log_bytes(server);
    let attempts = AtomicUsize::new(0);
    let end = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (attempts, attempt) = (&attempts, &attempt);
            scope.spawn(move || {
                let mut i = t * 1_000_000;
                while Instant::now() < end {
                    attempt(server, i);
                    i += 1;
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    // Whatever the last attempts made the server write.
    std::thread::sleep(Duration::from_millis(300));
    (attempts.into_inner(), log_bytes(server) - before)
}

#[test]
fn five_seconds_of_password_guessing_write_at_most_20_kb_of_log() {
    let _busy = busy();
    let server = TestServer::start(json!({}));
    let (attempts, bytes) = hammer(&server, 4, 5, |server, i| {
        let mut client = server.connect();
        client.send_text(&format!("guess{i}"));
        let (seen, _) = client.recv_until_end();
        let code = seen.first().map(|e| e["code"].clone());
        assert!(
            code == Some(json!("wrong_password")) || code == Some(json!("too_many_attempts")),
            "{seen:?}"
        );
    });
    eprintln!("{attempts} wrong passwords in 5 s: {bytes} bytes of log");
    assert!(attempts > 1000, "only {attempts} attempts: not a test of the log");
    assert!(bytes <= 20_000, "{attempts} attempts wrote {bytes} bytes of log");
    // The abuse is named at WARN, in the documented format, with the address.
    let abuse = server.wait_log("abuse from 127.0.0.1: too_many_attempts");
    assert!(abuse.contains("WARN"), "{abuse}");
}

#[test]
fn five_seconds_of_login_churn_write_at_most_30_kb_of_log() {
    let _busy = busy();
    let server = TestServer::start(json!({"server_password": ""}));
    let (attempts, bytes) = hammer(&server, 4, 5, |server, i| {
        drop(server.login(&format!("u{i}")));
    });
    eprintln!("{attempts} logins in 5 s: {bytes} bytes of log");
    assert!(attempts > 1000, "only {attempts} logins: not a test of the log");
    assert!(bytes <= 30_000, "{attempts} logins wrote {bytes} bytes of log");
    // The first logins of the minute are logged, at INFO, as before (whose:
    // the four threads race, and a slow machine may start thread 0 last).
    assert!(server.wait_log("\" logged in (").contains("INFO"));
}
