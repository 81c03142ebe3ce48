//! `redis::Conn` against a real `redis-server` started by each test on a
//! free port (own folder, no persistence, killed at the end), driven by a
//! `mio::Poll` of the test's own. Every wait has a deadline.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use ragnarok::redis::conn::{check, tls_config};
use ragnarok::redis::{Conn, ConnError, RedisUrl, Value};

use ragnarok_testkit::{CaCerts, ca_signed, temp_dir};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` of this test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(extra: &[&str]) -> Redis {
        Redis::spawn(|port| vec!["--port".into(), port.to_string()], extra)
    }

    /// TLS only, with the certificate files in `certs`.
    fn start_tls(certs: &CaCerts, extra: &[&str]) -> Redis {
        let args = |port: u16| {
            let mut args: Vec<String> =
                ["--port", "0", "--tls-port", &port.to_string()].map(String::from).to_vec();
            for (option, path) in [
                ("--tls-cert-file", &certs.cert),
                ("--tls-key-file", &certs.key),
                ("--tls-ca-cert-file", &certs.ca),
            ] {
                args.push(option.into());
                args.push(path.display().to_string());
            }
            args.extend(["--tls-auth-clients".into(), "no".into()]);
            args
        };
        Redis::spawn(args, extra)
    }

    fn spawn(port_args: impl Fn(u16) -> Vec<String>, extra: &[&str]) -> Redis {
        // The testkit's folders are numbered for the whole binary: a name of
        // this file's own would collide with the cluster tests' Redis folders.
        let dir = temp_dir("redis-conn");
        let port = free_port();
        let log = dir.join("redis.log");
        let spawned = Command::new("redis-server")
            .args(port_args(port))
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                panic!("redis-server not found: install it (apt install redis-server)")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut redis = Redis { child, port, dir };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server exited ({status}) before listening on {port}:\n{log}");
            }
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self, rest: &str) -> RedisUrl {
        RedisUrl::parse(&format!("redis://{rest}127.0.0.1:{}", self.port)).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn addr(url: &RedisUrl) -> SocketAddr {
    url.address().to_socket_addrs().unwrap().next().unwrap()
}

fn connect(
    poll: &Poll,
    url: &RedisUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: usize,
) -> Conn {
    Conn::connect(addr(url), url, tls, poll.registry(), Token(token)).unwrap()
}

/// Pumps every connection (as the server does on their events) until
/// `done` says so; the first connection error ends it.
fn run(
    poll: &mut Poll,
    conns: &mut [&mut Conn],
    mut done: impl FnMut(&mut [&mut Conn]) -> bool,
) -> Result<(), ConnError> {
    let deadline = Instant::now() + TIMEOUT;
    let mut events = Events::with_capacity(64);
    loop {
        for conn in conns.iter_mut() {
            conn.pump()?;
        }
        if done(conns) {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "no result within {TIMEOUT:?}");
        poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
    }
}

fn ready(poll: &mut Poll, conn: &mut Conn) -> Result<(), ConnError> {
    run(poll, &mut [conn], |c| c[0].is_ready())
}

/// Sends one command and waits for its reply.
fn call(poll: &mut Poll, conn: &mut Conn, args: &[&[u8]]) -> Value {
    conn.command(args);
    replies(poll, conn, 1).pop().unwrap()
}

fn replies(poll: &mut Poll, conn: &mut Conn, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    run(poll, &mut [conn], |c| {
        while let Some(v) = c[0].next() {
            got.push(v);
        }
        got.len() >= n
    })
    .unwrap();
    assert_eq!(got.len(), n, "{got:?}");
    got
}

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

#[test]
fn set_get_round_trip_and_select() {
    let redis = Redis::start(&[]);
    let mut poll = Poll::new().unwrap();
    let mut db0 = connect(&poll, &redis.url(""), None, 0);
    let db3_url = RedisUrl::parse(&format!("redis://127.0.0.1:{}/3", redis.port)).unwrap();
    let mut db3 = connect(&poll, &db3_url, None, 1);
    ready(&mut poll, &mut db0).unwrap();
    ready(&mut poll, &mut db3).unwrap();
    assert_eq!(call(&mut poll, &mut db0, &[b"SET", b"greeting", b"hej\r\n"]), bytes("OK"));
    assert_eq!(call(&mut poll, &mut db0, &[b"GET", b"greeting"]), bytes("hej\r\n"));
    assert_eq!(call(&mut poll, &mut db0, &[b"GET", b"nothing"]), Value::Nil);
    assert_eq!(call(&mut poll, &mut db0, &[b"INCRBY", b"n", b"-5"]), Value::Int(-5));
    let Value::Error(e) = call(&mut poll, &mut db0, &[b"NOSUCHCOMMAND"]) else { panic!() };
    assert!(e.starts_with("ERR unknown command"), "{e}");
    // The SELECT reply was eaten; the key lives in db 0 only.
    assert_eq!(call(&mut poll, &mut db3, &[b"GET", b"greeting"]), Value::Nil);
    let Value::Bytes(info) = call(&mut poll, &mut db3, &[b"CLIENT", b"INFO"]) else { panic!() };
    assert!(String::from_utf8_lossy(&info).contains(" db=3 "));
    assert_eq!(db0.queued(), 0);
    db0.deregister(poll.registry());
    db3.deregister(poll.registry());
}

#[test]
fn ten_thousand_pipelined_commands_come_back_in_order() {
    let redis = Redis::start(&[]);
    let mut poll = Poll::new().unwrap();
    let mut conn = connect(&poll, &redis.url(""), None, 0);
    // Queued before the connection is even up.
    for _ in 0..10_000 {
        conn.command(&[b"INCR", b"counter"]);
    }
    assert!(conn.queued() > 10_000 * 20, "{}", conn.queued());
    let got = replies(&mut poll, &mut conn, 10_000);
    assert!(got.into_iter().eq((1..=10_000).map(Value::Int)));
    assert_eq!(conn.queued(), 0);
    assert_eq!(conn.next(), None);
}

#[test]
fn a_subscriber_receives_what_another_connection_publishes() {
    let redis = Redis::start(&[]);
    let mut poll = Poll::new().unwrap();
    let mut sub = connect(&poll, &redis.url(""), None, 0);
    let mut publisher = connect(&poll, &redis.url(""), None, 1);
    sub.command(&[b"SUBSCRIBE", b"room"]);
    let confirm = replies(&mut poll, &mut sub, 1);
    assert_eq!(confirm, [Value::Array(vec![bytes("subscribe"), bytes("room"), Value::Int(1)])]);
    for text in ["one", "two", "three"] {
        publisher.command(&[b"PUBLISH", b"room", text.as_bytes()]);
    }
    let mut published = Vec::new();
    let mut received = Vec::new();
    run(&mut poll, &mut [&mut sub, &mut publisher], |c| {
        received.extend(std::iter::from_fn(|| c[0].next()));
        published.extend(std::iter::from_fn(|| c[1].next()));
        received.len() == 3 && published.len() == 3
    })
    .unwrap();
    assert_eq!(published, [Value::Int(1), Value::Int(1), Value::Int(1)]);
    let expected: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|t| Value::Array(vec![bytes("message"), bytes("room"), bytes(t)]))
        .collect();
    assert_eq!(received, expected);
}

#[test]
fn requirepass_right_password_works_wrong_one_is_refused() {
    let redis = Redis::start(&["--requirepass", "s3cret"]);
    let mut poll = Poll::new().unwrap();
    for good in [":s3cret@", "default:s3cret@"] {
        let mut conn = connect(&poll, &redis.url(good), None, 0);
        assert_eq!(call(&mut poll, &mut conn, &[b"PING"]), bytes("PONG"));
        assert!(conn.is_ready());
        conn.deregister(poll.registry());
    }
    let mut conn = connect(&poll, &redis.url(":wrong@"), None, 1);
    conn.command(&[b"PING"]);
    let err = run(&mut poll, &mut [&mut conn], |_| false).unwrap_err();
    let ConnError::Auth(text) = &err else { panic!("{err:?}") };
    assert!(text.starts_with("AUTH refused: WRONGPASS"), "{text}");
    assert!(!conn.is_ready());
    assert_eq!(conn.next(), None, "nothing after a refused AUTH");
    // No password at all: the command itself is refused, for the caller to see.
    let mut conn = connect(&poll, &redis.url(""), None, 2);
    let Value::Error(e) = call(&mut poll, &mut conn, &[b"GET", b"k"]) else { panic!() };
    assert!(e.starts_with("NOAUTH"), "{e}");

    let e = check(&redis.url(":wrong@"), None, TIMEOUT).unwrap_err();
    let start = format!(
        "cannot connect to redis://:***@127.0.0.1:{}/0: AUTH refused: WRONGPASS",
        redis.port
    );
    assert!(e.starts_with(&start), "{e}");
    assert!(!e.contains("wrong"), "{e}");
    assert!(check(&redis.url(":s3cret@"), None, TIMEOUT).is_ok());
}

#[test]
fn replies_split_across_many_reads() {
    let redis = Redis::start(&[]);
    let mut poll = Poll::new().unwrap();
    let mut conn = connect(&poll, &redis.url(""), None, 0);
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    conn.command(&[b"SET", b"big", &big]);
    conn.command(&[b"GET", b"big"]);
    conn.command(&[b"STRLEN", b"big"]);
    let got = replies(&mut poll, &mut conn, 3);
    assert_eq!(got[0], bytes("OK"));
    assert!(got[1] == Value::Bytes(big), "the 5 MB value came back different");
    assert_eq!(got[2], Value::Int(5_000_000));
}

#[test]
fn a_killed_redis_ends_the_connection() {
    let mut redis = Redis::start(&[]);
    let mut poll = Poll::new().unwrap();
    let mut conn = connect(&poll, &redis.url(""), None, 0);
    assert_eq!(call(&mut poll, &mut conn, &[b"PING"]), bytes("PONG"));
    redis.kill();
    let started = Instant::now();
    let err = run(&mut poll, &mut [&mut conn], |_| false).unwrap_err();
    assert!(matches!(err, ConnError::Closed | ConnError::Io(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A write to the dead connection fails too.
    conn.command(&[b"PING"]);
    assert!(conn.pump().is_err());
}

#[test]
fn check_and_connect_against_a_closed_port_fail_fast() {
    let port = free_port();
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    let started = Instant::now();
    let e = check(&url, None, TIMEOUT).unwrap_err();
    assert_eq!(e, format!("cannot connect to redis://127.0.0.1:{port}/0: Connection refused"));
    assert!(started.elapsed() < Duration::from_secs(1));

    let mut poll = Poll::new().unwrap();
    let mut conn = connect(&poll, &url, None, 0);
    conn.command(&[b"PING"]);
    let err = run(&mut poll, &mut [&mut conn], |_| false).unwrap_err();
    let ConnError::Io(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(err.to_string(), "Connection refused");

    let redis = Redis::start(&[]);
    assert_eq!(check(&redis.url(""), None, TIMEOUT), Ok(addr(&redis.url(""))));
    let e = check(
        &RedisUrl::parse(&format!("redis://127.0.0.1:{}/99", redis.port)).unwrap(),
        None,
        TIMEOUT,
    )
    .unwrap_err();
    assert!(e.ends_with("/99: SELECT refused: ERR DB index is out of range"), "{e}");
}

/// Whether this redis-server was built with TLS (Debian's is): asked for
/// a TLS port without a certificate, one built with TLS says it needs a
/// certificate and exits at once (before binding anything).
fn redis_has_tls() -> bool {
    let spawned = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", "1", "--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("redis-server not found: install it (apt install redis-server)")
        }
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // Still running: it took the option for something else.
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut text = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut text);
    let _ = child.stderr.take().unwrap().read_to_string(&mut text);
    text.contains("No tls-cert-file configured")
}

#[test]
fn rediss_against_a_tls_redis() {
    if !redis_has_tls() {
        panic!(
            "SKIPPED LOUDLY: this redis-server was built without TLS (BUILD_TLS=yes), so \
             rediss:// cannot be tested here; install a TLS-enabled redis-server (Debian's is)"
        );
    }
    let dir = std::env::temp_dir().join(format!("ragnarok-redis-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = ca_signed(&dir);
    let redis = Redis::start_tls(&certs, &["--requirepass", "s3cret"]);
    let tls = tls_config(Some(&certs.ca)).unwrap();
    let url = RedisUrl::parse(&format!("rediss://:s3cret@127.0.0.1:{}/2", redis.port)).unwrap();

    assert_eq!(check(&url, Some(tls.clone()), TIMEOUT), Ok(addr(&url)));
    // The system's CAs do not know ours.
    let system = tls_config(None).unwrap();
    let e = check(&url, Some(system.clone()), TIMEOUT).unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");

    let mut poll = Poll::new().unwrap();
    let mut conn = connect(&poll, &url, Some(tls.clone()), 0);
    ready(&mut poll, &mut conn).unwrap();
    assert_eq!(call(&mut poll, &mut conn, &[b"SET", b"k", b"over tls"]), bytes("OK"));
    assert_eq!(call(&mut poll, &mut conn, &[b"GET", b"k"]), bytes("over tls"));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    conn.command(&[b"SET", b"big", &big]);
    for _ in 0..1000 {
        conn.command(&[b"INCR", b"n"]);
    }
    conn.command(&[b"GET", b"big"]);
    assert!(conn.queued() > 3_000_000);
    let got = replies(&mut poll, &mut conn, 1002);
    assert_eq!(got[0], bytes("OK"));
    assert!(got[1..1001].iter().cloned().eq((1..=1000).map(Value::Int)));
    assert!(got[1001] == Value::Bytes(big));
    assert_eq!(conn.queued(), 0);

    let mut pubsub = connect(&poll, &url, Some(tls.clone()), 1);
    pubsub.command(&[b"SUBSCRIBE", b"room"]);
    replies(&mut poll, &mut pubsub, 1);
    assert_eq!(call(&mut poll, &mut conn, &[b"PUBLISH", b"room", b"hi"]), Value::Int(1));
    let got = replies(&mut poll, &mut pubsub, 1);
    assert_eq!(got, [Value::Array(vec![bytes("message"), bytes("room"), bytes("hi")])]);

    // Untrusted certificate, non-blocking: a TLS error.
    let mut bad = connect(&poll, &url, Some(system), 2);
    let err = run(&mut poll, &mut [&mut bad], |_| false).unwrap_err();
    assert!(matches!(err, ConnError::Tls(_)), "{err:?}");
    // Wrong password over TLS.
    let wrong = RedisUrl::parse(&format!("rediss://:nope@127.0.0.1:{}", redis.port)).unwrap();
    let mut bad = connect(&poll, &wrong, Some(tls), 3);
    let err = run(&mut poll, &mut [&mut bad], |_| false).unwrap_err();
    assert!(matches!(err, ConnError::Auth(_)), "{err:?}");
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
