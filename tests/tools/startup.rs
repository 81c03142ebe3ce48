//! Starting the binary: help, version, config checks, certificates in every
//! key format, and one clear stderr line with a sysexits code for each
//! mistake (never a panic).

use ragnarok_testkit::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).env_remove("RUST_LOG").output().unwrap()
}

/// Writes `config` (merged into the base config) into a fresh folder and
/// runs `ragnarok --check-config` or a real start on it.
fn with_config(dir: &Path, overrides: Value, check_only: bool) -> Output {
    let mut config = base_config();
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let path = path.to_str().unwrap();
    if check_only { run(&["--config", path, "--check-config"]) } else { run(&["--config", path]) }
}

fn fails_with(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}

#[test]
fn help_version_and_usage_errors() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config PATH"));
    let version = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("ragnarok {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = run(&["--colour"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--colour"));
    assert_eq!(run(&["--config"]).status.code(), Some(64));
}

#[test]
fn config_mistakes_name_the_culprit() {
    let dir = temp_dir("startup");
    fails_with(
        &with_config(&dir, json!({"SSL_cert": "x"}), false),
        78,
        "\"SSL_cert\" (did you mean \"SSL_Cert\"?)",
    );
    fails_with(
        &with_config(&dir, json!({"server_port": "12345"}), false),
        78,
        "\"server_port\" must be a number",
    );
    fails_with(
        &with_config(&dir, json!({"max_message_bytes": -1}), false),
        78,
        "\"max_message_bytes\"",
    );
    fails_with(&run(&["--config", dir.join("nope.json").to_str().unwrap()]), 78, "nope.json");
    std::fs::write(dir.join("broken.json"), "{\"SSL\": false,,}").unwrap();
    fails_with(
        &run(&["--config", dir.join("broken.json").to_str().unwrap()]),
        78,
        "broken.json is not valid JSON",
    );

    fails_with(&with_config(&dir, json!({"SSL": true}), false), 78, "cert.pem");
    std::fs::write(dir.join("cert.pem"), "not a pem at all").unwrap();
    std::fs::write(
        dir.join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    fails_with(&with_config(&dir, json!({"SSL": true}), true), 78, "cert.pem");
    let cert = TestCert::new();
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    fails_with(&with_config(&dir, json!({"SSL": true}), true), 78, "key.pem");
    // A key that does not belong to the certificate: one line naming both
    // files, on --check-config and at a real start alike.
    std::fs::write(dir.join("key.pem"), TestCert::new().key_pem).unwrap();
    let mismatch = format!(
        "the key in {} does not match the certificate in {}",
        dir.join("key.pem").display(),
        dir.join("cert.pem").display()
    );
    let checked = with_config(&dir, json!({"SSL": true}), true);
    fails_with(&checked, 78, &mismatch);
    assert!(!String::from_utf8_lossy(&checked.stderr).contains("KeyMismatch"));
    fails_with(&with_config(&dir, json!({"SSL": true}), false), 78, &mismatch);
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
    let ok = with_config(&dir, json!({"SSL": true}), true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn address_in_use_and_bad_address() {
    let dir = temp_dir("startup");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    fails_with(
        &with_config(&dir, json!({"server_port": port}), false),
        69,
        &format!("127.0.0.1:{port}"),
    );
    fails_with(&with_config(&dir, json!({"server_ip": "203.0.113.1"}), false), 69, "203.0.113.1");
}

#[test]
fn check_config_checks_the_addresses_but_not_the_ports() {
    let dir = temp_dir("check-addresses");
    let not_here = with_config(&dir, json!({"server_ip": "203.0.113.1"}), true);
    fails_with(&not_here, 78, "\"server_ip\" \"203.0.113.1\" is not an address of this machine");
    let no_such_host = with_config(&dir, json!({"server_ip": "no-such-host.invalid"}), true);
    fails_with(&no_such_host, 78, "\"server_ip\" \"no-such-host.invalid\" does not resolve");
    let bad_metrics = with_config(&dir, json!({"metrics_addr": "203.0.113.1:9898"}), true);
    fails_with(&bad_metrics, 78, "\"metrics_addr\" \"203.0.113.1:9898\" is not an address");
    // A port in use is fine: the running service may be the one holding it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ok =
        with_config(&dir, json!({"server_port": port, "metrics_addr": "localhost:9898"}), true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn under_journald_log_lines_have_no_timestamp_of_their_own() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = temp_dir("journal");
    let path = dir.join("config.json");
    std::fs::write(&path, base_config().to_string()).unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // The syslog priority first, which journald takes off and keeps as
    // PRIORITY (`journalctl -p warning`), then no timestamp.
    assert!(first.starts_with("<6>INFO "), "{first:?}");
    assert!(first.contains("listening on"), "{first:?}");
}

#[test]
fn help_into_a_closed_pipe_is_no_error() {
    use std::process::Stdio;
    let mut child = Command::new(binary())
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader went away, like `| head -0`
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn keys_in_every_pem_format_load() {
    let dir = temp_dir("keys");
    // The seed README's own command (PKCS#8 key from modern openssl).
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-x509",
            "-days",
            "365",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=localhost",
        ],
    );
    assert!(with_config(&dir, json!({"SSL": true}), true).status.success());
    // PKCS#1 ("BEGIN RSA PRIVATE KEY").
    openssl(&dir, &["rsa", "-in", "key.pem", "-traditional", "-out", "key.pem"]);
    assert!(
        std::fs::read_to_string(dir.join("key.pem")).unwrap().contains("BEGIN RSA PRIVATE KEY")
    );
    assert!(with_config(&dir, json!({"SSL": true}), true).status.success());
    // SEC1 ("BEGIN EC PRIVATE KEY").
    openssl(&dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"]);
    assert!(std::fs::read_to_string(dir.join("key.pem")).unwrap().contains("BEGIN EC PRIVATE KEY"));
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "key.pem",
            "-days",
            "30",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    assert!(with_config(&dir, json!({"SSL": true}), true).status.success());

    // And a real wss session on the SEC1 key.
    let cert = TestCert::from_pem(
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
    );
    let server = TestServer::start_with_cert(json!({}), cert);
    let mut alice = server.login("alice");
    alice.send_json(broadcast("over SEC1"));
    assert_eq!(alice.recv_json()["text"], "over SEC1");
}

/// `--check-config` connects to Redis and authenticates, as a real start
/// does, and fails with the same line and exit code (69) when it cannot.
#[test]
fn check_config_authenticates_to_redis_like_a_real_start() {
    let dir = temp_dir("check-redis");
    let redis = cluster::Redis::start();
    assert_eq!(redis.command("CONFIG SET requirepass s3cret"), "+OK");
    let config = |password: &str| {
        json!({
            "redis_url": format!("redis://:{password}@127.0.0.1:{}", redis.port),
            "cluster_name": cluster::unique_cluster_name("check"),
        })
    };
    let real = with_config(&dir, config("wrong"), false);
    fails_with(&real, 69, "AUTH refused");
    let checked = with_config(&dir, config("wrong"), true);
    fails_with(&checked, 69, "AUTH refused");
    assert_eq!(
        String::from_utf8_lossy(&checked.stderr),
        String::from_utf8_lossy(&real.stderr),
        "the same line as a real start"
    );
    assert!(!String::from_utf8_lossy(&checked.stderr).contains("wrong@"), "password printed");
    let ok = with_config(&dir, config("s3cret"), true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // No Redis at all: the same as a real start too.
    let port = cluster::free_port();
    let gone = json!({"redis_url": format!("redis://127.0.0.1:{port}"), "cluster_name": "x"});
    fails_with(&with_config(&dir, gone, true), 69, &format!("redis://127.0.0.1:{port}"));
}
