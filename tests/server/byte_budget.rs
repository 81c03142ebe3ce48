//! What one user's messages may make the server write, in bytes: each user
//! has a byte budget (`rate_limit_bytes_per_sec`, `rate_limit_bytes_burst`),
//! a login replays at most `history_max_bytes` of history, and a reader who
//! keeps up is not cut off by everyone's legal bursts arriving at once.
//! Every figure is counted in bytes, never in time. (An ignored test
//! measures what a reader on a 2 Mbit/s link goes through.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ragnarok_testkit::*;
use serde_json::{Value, json};

/// The defaults this file measures against.
const MAX_MESSAGE: usize = 16384;
const BYTES_BURST: usize = 131072;
const HISTORY_MAX: usize = 65536;
/// The issue's aim: one user delivers at most this much to another in 5 s.
const AIM: usize = 1 << 20;

/// A request of exactly `size` bytes: `{"msgType":"Broadcast","text":"xx…"}`
/// (or a `PrivateMessage` to `to`), the text starting with `tag`.
fn sized(size: usize, tag: &str, to: Option<&str>) -> String {
    let shell = match to {
        Some(to) => json!({"msgType": "PrivateMessage", "TgtUser": to, "text": ""}),
        None => json!({"msgType": "Broadcast", "text": ""}),
    }
    .to_string();
    let text = format!("{tag}{}", "x".repeat(size - shell.len() - tag.len()));
    let message = shell.replace(r#""text":"""#, &format!(r#""text":"{text}""#));
    assert_eq!(message.len(), size);
    message
}

fn is_json_of(payload: &[u8], prefix: &str) -> bool {
    payload.starts_with(prefix.as_bytes())
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).expect("JSON")
}

/// Reads until `done` says so; every frame must come within `TIMEOUT`.
fn read_until(client: &mut RawClient, who: &str, mut done: impl FnMut(&[u8]) -> bool) {
    loop {
        match client.next(TIMEOUT) {
            Got::Frame { opcode: 1, payload } if done(&payload) => return,
            Got::Frame { opcode: 1, .. } => {}
            other => panic!("{who}: {other:?}"),
        }
    }
}

#[test]
fn one_user_sending_the_largest_broadcasts_as_fast_as_allowed_delivers_at_most_a_mib_in_5_s() {
    for server in TestServer::both(json!({})) {
        let mut alice = server.raw_login("alice");
        let mut bob = server.raw_login("bob");
        read_until(&mut alice, "alice", |p| is_json_of(p, r#"{"msgType":"OnlineUsers""#));
        let big: Vec<String> =
            (0..140).map(|i| sized(MAX_MESSAGE, &format!("{i}:"), None)).collect();
        let from_alice = r#"{"msgType":"Broadcast","SrcUser":"alice","text":""#;
        let end = r#"{"msgType":"Broadcast","SrcUser":"alice","text":"end"}"#;

        let received = std::thread::scope(|s| {
            // Bob reads everything as it comes and counts alice's bytes.
            let reader = s.spawn(move || {
                let (mut bytes, mut count) = (0, 0);
                read_until(&mut bob, "bob", |p| {
                    if p == end.as_bytes() {
                        return true;
                    }
                    if is_json_of(p, from_alice) {
                        bytes += p.len();
                        count += 1;
                    }
                    false
                });
                (bytes, count)
            });
            // Alice: the message rate's burst of 40 at once, then 19 a
            // second for 5 s (the message rate allows 20), reading her own
            // copies and the refusals meanwhile.
            let (mut refused_bytes, mut refused_other) = (0, 0);
            let mut on_frame = |p: &[u8]| {
                if is_json_of(p, r#"{"msgType":"Error""#) {
                    let error = parse(p);
                    assert_eq!(error["code"], "rate_limited", "{error}");
                    let text = error["text"].as_str().unwrap();
                    if text.contains("bytes") { refused_bytes += 1 } else { refused_other += 1 }
                }
            };
            let start = Instant::now();
            for (i, message) in big.iter().enumerate() {
                let due = start + Duration::from_secs_f64(i.saturating_sub(40) as f64 / 19.0);
                // What has come is read before each message (so that alice
                // never blocks the server on her own copies).
                loop {
                    let wait = due.saturating_duration_since(Instant::now());
                    match alice.next(wait.max(Duration::from_millis(1))) {
                        Got::Frame { opcode: 1, payload } => on_frame(&payload),
                        Got::Quiet if Instant::now() >= due => break,
                        Got::Quiet => {}
                        other => panic!("alice: {other:?}"),
                    }
                }
                alice.send_text(message);
            }
            std::thread::sleep(Duration::from_millis(300));
            alice.send_text(&broadcast("end").to_string());
            read_until(&mut alice, "alice", |p| {
                on_frame(p);
                p == end.as_bytes()
            });
            assert!(refused_bytes > 0, "no refusal for bytes ({refused_other} for messages)");
            reader.join().unwrap()
        });
        let (bytes, count) = received;
        // 8 messages of the burst, then 2 a second: about 20 in 5.3 s.
        assert!(bytes <= AIM, "{bytes} bytes of alice's in 5 s ({count} broadcasts)");
        assert!(count >= BYTES_BURST / MAX_MESSAGE, "the burst got through: {count}");
    }
}

/// Logs `name` in and returns every frame's payload up to its own live
/// marker, the welcome included.
fn login_output(server: &TestServer, name: &str) -> Vec<Vec<u8>> {
    let mut client = server.raw_open();
    client.send_text(&server.password);
    client.send_text(name);
    let marker = format!("live marker of {name}");
    client.send_text(&broadcast(&marker).to_string());
    let mut seen = Vec::new();
    loop {
        match client.next(TIMEOUT) {
            Got::Frame { opcode: 1, payload } => {
                if payload.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    return seen;
                }
                seen.push(payload);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_login_is_sent_at_most_history_max_bytes_of_history() {
    for (config, budget) in [
        (json!({}), HISTORY_MAX),
        (json!({"history_max_bytes": 20000}), 20000),
        (json!({"history_max_bytes": 300000, "max_outbound_bytes": 600000}), 300000),
    ] {
        let mut config = config;
        // Filled as fast as possible: the rates are not what is measured.
        config["rate_limit_per_sec"] = json!(0);
        config["rate_limit_bytes_per_sec"] = json!(0);
        let server = TestServer::start(config);
        let mut alice = server.raw_login("alice");
        for i in 0..50 {
            alice.send_text(&sized(MAX_MESSAGE, &format!("#{i:02}:"), None));
        }
        let last = r##""text":"#49:"##;
        read_until(&mut alice, "alice", |p| p.windows(last.len()).any(|w| w == last.as_bytes()));

        let seen = login_output(&server, "carol");
        let replays: Vec<&Vec<u8>> =
            seen.iter().filter(|p| p.ends_with(br#","history":true}"#)).collect();
        let replayed: usize = replays.iter().map(|p| p.len()).sum();
        let rest: usize = seen.iter().map(Vec::len).sum::<usize>() - replayed;
        let fit = budget / replays.first().map_or(1, |p| p.len());
        assert!(replayed <= budget, "{replayed} bytes of history over {budget}");
        assert_eq!(replays.len(), fit, "as many of the newest as fit {budget} bytes");
        let newest = parse(replays.last().unwrap());
        assert!(newest["text"].as_str().unwrap().starts_with("#49:"), "the newest last");
        assert!(is_json_of(&seen[0], r#"{"ServerName""#), "the welcome first");
        assert!(rest < 256, "the welcome and the list of two: {rest} bytes");
    }
}

#[test]
fn a_reader_who_keeps_up_is_not_cut_off_by_everyones_legal_burst_at_once() {
    let _busy = busy(); // 2.6 MB for one reader, 21 clients
    const SENDERS: usize = 20;
    let per_sender = BYTES_BURST / MAX_MESSAGE;
    for server in TestServer::both(json!({})) {
        let mut senders: Vec<RawClient> =
            (0..SENDERS).map(|i| server.raw_login(&format!("s{i}"))).collect();
        let mut reader = server.raw_login("reader");
        // Every sender has heard of everyone (the reader, last, got the
        // whole list at login): nothing else is waiting for anyone.
        let everyone = SENDERS + 1;
        for sender in &mut senders {
            read_until(sender, "a sender", |p| {
                let m = parse(p);
                m["msgType"] == "OnlineUsers" && m["Users"].as_array().unwrap().len() == everyone
            });
        }
        let burst: Vec<Vec<Vec<u8>>> = (0..SENDERS)
            .map(|i| {
                (0..per_sender)
                    .map(|k| {
                        let text = sized(MAX_MESSAGE, &format!("s{i}#{k}:"), Some("reader"));
                        masked_frame(0x1, text.as_bytes())
                    })
                    .collect()
            })
            .collect();
        let private = r#"{"msgType":"PrivateMessage","SrcUser":"s"#;
        let written = AtomicUsize::new(0);
        let (count, bytes, trouble) = std::thread::scope(|s| {
            let reading = s.spawn(|| {
                let (mut count, mut bytes) = (0, 0);
                while count < SENDERS * per_sender {
                    match reader.next(TIMEOUT) {
                        Got::Frame { opcode: 1, payload } if is_json_of(&payload, private) => {
                            count += 1;
                            bytes += payload.len();
                        }
                        Got::Frame { payload, .. } => {
                            let what = String::from_utf8_lossy(&payload).into_owned();
                            return (count, bytes, Some(what));
                        }
                        other => return (count, bytes, Some(format!("{other:?}"))),
                    }
                }
                (count, bytes, None)
            });
            // The server is frozen while every sender writes its whole
            // burst, so that all of it is there to be read in one round.
            server.signal("STOP");
            let writing: Vec<_> = senders
                .iter_mut()
                .zip(&burst)
                .map(|(sender, frames)| {
                    let written = &written;
                    s.spawn(move || {
                        for frame in frames {
                            std::io::Write::write_all(&mut sender.stream, frame).unwrap();
                            written.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            // Until at least half of every burst is in the kernel's buffers
            // (the rest follows as the server reads).
            let deadline = Instant::now() + Duration::from_secs(3);
            while written.load(Ordering::SeqCst) < SENDERS * per_sender / 2
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            server.signal("CONT");
            writing.into_iter().for_each(|w| w.join().unwrap());
            reading.join().unwrap()
        });
        let expected = SENDERS * per_sender;
        assert_eq!(trouble, None, "after {count} of {expected} messages ({bytes} bytes)");
        assert_eq!(count, expected);
        // Still online, nothing else queued: its own broadcast comes back.
        reader.send_text(&broadcast("still here").to_string());
        let m = reader.next_json();
        assert_eq!(m["text"], "still here", "{m}");
    }
}

#[test]
fn the_byte_budgets_keys_are_checked() {
    let dir = temp_dir("byte-keys");
    let check = |overrides: Value| {
        let mut config = base_config();
        for (k, v) in overrides.as_object().unwrap() {
            config[k] = v.clone();
        }
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let output = std::process::Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    for (overrides, needles) in [
        (
            json!({"rate_limit_bytes_burst": 1000}),
            &["\"rate_limit_bytes_burst\"", "\"max_message_bytes\""],
        ),
        (
            json!({"max_message_bytes": 262144}),
            &["\"rate_limit_bytes_burst\"", "\"max_message_bytes\""],
        ),
        (
            json!({"history_max_bytes": 600000}),
            &["\"history_max_bytes\"", "\"max_outbound_bytes\""],
        ),
        (
            json!({"rate_limit_bytes_per_sec": -1}),
            &["\"rate_limit_bytes_per_sec\"", "whole number"],
        ),
    ] {
        let (code, stderr) = check(overrides.clone());
        assert_eq!(code, Some(78), "{overrides}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{overrides}: {needle} not in {stderr}");
        }
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    for fine in [
        json!({}),
        json!({"rate_limit_bytes_per_sec": 0, "max_message_bytes": 1 << 20}),
        json!({"rate_limit_bytes_burst": 1 << 20, "max_message_bytes": 1 << 20}),
        // The default history budget follows a smaller output limit.
        json!({"max_outbound_bytes": 65536}),
        json!({"history_max_bytes": 524288}),
    ] {
        let (code, stderr) = check(fine.clone());
        assert_eq!(code, Some(0), "{fine}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the phone of [`phone_beside`] went through.
struct Phone {
    /// Bytes it read.
    read: usize,
    /// Cut off as a slow reader: when (seconds after the noise began), and
    /// the server's log line about it.
    cut_off: Option<(f64, String)>,
}

/// A phone on a 2 Mbit/s link: a reader that takes 250,000 bytes a second
/// (its socket's receive buffer 16 KiB) while `loud` users send the
/// largest messages as fast as their byte budgets allow (all their bursts
/// at the same moment, then 2 a second each) for `secs` seconds.
fn phone_beside(loud: usize, secs: u64) -> Phone {
    use std::io::Read;
    let server = TestServer::start(json!({}));
    // The receive buffer is set before the connect, so the window is never
    // larger than it (the kernel doubles it: 32 KiB in all).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut phone = server.raw_login_over(server.stream_over(socket.into()), "phone");
    let mut users: Vec<RawClient> = (0..loud).map(|i| server.raw_login(&format!("u{i}"))).collect();
    // Presence is done with before the noise starts.
    let everyone = |p: &[u8]| {
        let m = parse(p);
        m["msgType"] == "OnlineUsers" && m["Users"].as_array().unwrap().len() == loud + 1
    };
    read_until(&mut phone, "phone", everyone);
    for user in users.iter_mut().take(loud.saturating_sub(1)) {
        read_until(user, "a loud user", everyone);
    }
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let read = std::thread::scope(|s| {
        for (i, user) in users.iter_mut().enumerate() {
            s.spawn(move || {
                let mut sent: u32 = 0;
                while Instant::now() < stop {
                    // The burst at once, then one every 0.5 s: 32 KiB a second.
                    let due = start + Duration::from_millis(500) * (sent + 1).saturating_sub(8);
                    if Instant::now() >= due {
                        user.send_text(&sized(MAX_MESSAGE, &format!("u{i}#{sent}:"), None));
                        sent += 1;
                        continue;
                    }
                    // Loud, but reading everything.
                    let wait = due.saturating_duration_since(Instant::now());
                    if let Got::End = user.next(wait.max(Duration::from_millis(1))) {
                        panic!("loud user u{i} was cut off");
                    }
                }
            });
        }
        // The phone: 250,000 bytes a second, never more, until the end of
        // its stream or 10 s of silence after the noise.
        let mut stream = phone.stream;
        stream.tcp().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut read = 0usize;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let allowed =
                ((start.elapsed().as_secs_f64() * 250_000.0) as usize).saturating_sub(read);
            if allowed == 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let n = allowed.min(chunk.len());
            match stream.read(&mut chunk[..n]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() > stop + Duration::from_secs(10) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        read
    });
    // When, by the log's own clock: its line against the last loud login's.
    let log = server.log();
    let at = |line: &str| {
        let time = line.split_whitespace().next()?.split('T').nth(1)?.trim_end_matches('Z');
        let mut hms = time.split(':').map(|x| x.parse::<f64>().ok());
        Some(hms.next()?? * 3600.0 + hms.next()?? * 60.0 + hms.next()??)
    };
    let began = log.iter().rev().find(|l| l.contains(" logged in (")).and_then(|l| at(l));
    let cut_off = log.iter().find(|l| l.contains("slow reader over")).map(|line| {
        let after = at(line).zip(began).map_or(f64::NAN, |(t, t0)| t - t0);
        (after, line.split("INFO").last().unwrap_or(line).trim().to_owned())
    });
    Phone { read, cut_off }
}

/// The phone's figures for PROTOCOL.md ("What a client may cost the
/// server"): how many users, loud within the rules, a 2 Mbit/s reader
/// keeps up with. A measurement, not a check (it takes 6 minutes; `LOUD`
/// and `SECS` choose other counts and durations):
/// `cargo test --release --test server phone -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_phone_at_2_mbit_per_s_beside_users_loud_within_the_rules() {
    let _quiet = quiet();
    let loud: Vec<usize> = std::env::var("LOUD")
        .map(|v| v.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![7, 8, 10, 12, 16, 24]);
    let secs = std::env::var("SECS").map_or(60, |v| v.parse().unwrap());
    for loud in loud {
        let phone = phone_beside(loud, secs);
        let verdict = match &phone.cut_off {
            Some((after, line)) => format!("cut off after {after:.1} s ({line})"),
            None => "kept up".into(),
        };
        println!(
            "{loud:>2} loud users for {secs} s: the phone read {} bytes, {verdict}",
            phone.read
        );
    }
}
