//! The load generator against the real server: every broadcast reaches
//! every user in order under load (0 lost, 0 reordered), over ws and wss.
//! It checks the figures' consistency, never their speed.

use ragnarok_testkit::*;
use serde_json::{Value, json};
use std::process::Command;

fn load(server: &TestServer, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragnarok-load"));
    cmd.args(args).args(["--addr", &server.addr.to_string(), "--password", &server.password]);
    if server.is_tls() {
        cmd.arg("--tls").arg(server.dir.join("cert.pem"));
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn fanout_and_private_under_load_lose_nothing() {
    let _busy = busy(); // loads the machine
    for server in TestServer::both(json!({"rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0,
               "max_connections_per_ip": 0, "max_handshakes_per_ip": 0}))
    {
        let pid = server.pid().to_string();
        let r = load(&server, &["fanout", "-n", "40", "-c", "4", "-t", "1", "--pid", &pid]);
        assert_eq!((r["logged_in"].as_u64(), r["dropped"].as_u64()), (Some(40), Some(0)), "{r}");
        assert_eq!((r["lost"].as_u64(), r["reordered"].as_u64()), (Some(0), Some(0)), "{r}");
        let deliveries = r["deliveries"].as_u64().unwrap();
        assert!(
            deliveries > 0 && deliveries.is_multiple_of(40),
            "every message reached all 40: {r}"
        );
        // The server's CPU was sampled, and its kernel part is part of it.
        let cpu = r["cpu_us_per_delivery"].as_f64().expect("CPU sampled");
        let sys = r["sys_us_per_delivery"].as_f64().expect("kernel CPU sampled");
        assert!(cpu > 0.0 && (0.0..=cpu).contains(&sys), "{r}");
        // So was its own (one thread: at most one core, plus tick rounding).
        let own = r["loadgen_cpu_pct"].as_f64().expect("own CPU sampled");
        assert!(own > 0.0 && own <= 105.0, "{r}");

        // Again on the same server: the joiners' history replay of the first
        // run's messages is not mistaken for this run's.
        let r = load(&server, &["fanout", "-n", "40", "-c", "4", "-t", "1"]);
        assert_eq!((r["lost"].as_u64(), r["reordered"].as_u64()), (Some(0), Some(0)), "{r}");

        let r = load(&server, &["private", "-k", "5", "-t", "1"]);
        assert_eq!(r["logged_in"], 10, "{r}");
        assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");

        let r = load(&server, &["joinstorm", "-n", "100"]);
        assert_eq!(r["logged_in"], 100, "{r}");
    }
}

#[test]
fn open_loop_fanout_keeps_its_rate_and_loses_nothing() {
    let _quiet = quiet(); // keeps a rate: nothing busy beside it
    for server in TestServer::both(json!({"rate_limit_per_sec": 0, "rate_limit_bytes_per_sec": 0,
               "max_connections_per_ip": 0, "max_handshakes_per_ip": 0}))
    {
        let pid = server.pid().to_string();
        // 4 senders x 50/s = 200 messages/s into 40 users for 2 s.
        let args = ["fanout", "-n", "40", "-c", "4", "--rate", "50", "-t", "2", "--pid", &pid];
        let r = load(&server, &args);
        assert_eq!(r["mode"], "open", "{r}");
        assert_eq!((r["logged_in"].as_u64(), r["dropped"].as_u64()), (Some(40), Some(0)), "{r}");
        assert_eq!((r["lost"].as_u64(), r["reordered"].as_u64()), (Some(0), Some(0)), "{r}");
        assert_eq!(
            (r["drained"].as_bool(), r["undelivered"].as_u64()),
            (Some(true), Some(0)),
            "{r}"
        );
        assert_eq!(r["offered_per_sec"].as_f64(), Some(200.0), "{r}");
        assert_eq!(r["scheduled"].as_u64(), Some(400), "{r}");
        // The schedule was kept: every send made, at close to the offered rate.
        let sent = r["sent"].as_u64().unwrap();
        let achieved = r["sent_per_sec"].as_f64().unwrap();
        assert!(sent >= 396 && (190.0..=201.0).contains(&achieved), "{r}");
        // Late sends are reported (how many depends on the machine's load:
        // judged in the benchmark, not here).
        assert!(r["late_sends"].as_u64().is_some_and(|late| late <= sent), "{r}");
        // Each message reached all 40 users; those that arrived inside the
        // window are the deliveries counted there.
        let deliveries = r["deliveries"].as_u64().unwrap();
        assert!(deliveries <= sent * 40 && deliveries >= (sent - 20) * 40, "{r}");
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
        let pct = r["server_cpu_pct"].as_f64().expect("server CPU sampled");
        let cpu = r["cpu_us_per_delivery"].as_f64().expect("CPU per delivery");
        assert!((0.0..=105.0).contains(&pct) && cpu >= 0.0, "{r}");
        assert!(r["loadgen_cpu_pct"].as_f64().is_some(), "{r}");
    }
}

#[test]
fn several_addresses_spread_the_users_and_several_pids_are_reported_each() {
    let _busy = busy(); // loads the machine
    // Two separate servers (not a cluster): user i goes to the (i mod 2)-th,
    // so each holds half; both processes are sampled, each and in total.
    let overrides = json!({"max_connections_per_ip": 0, "max_handshakes_per_ip": 0});
    let (a, b) = (TestServer::start(overrides.clone()), TestServer::start(overrides));
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let (aa, ab) = (a.addr.to_string(), b.addr.to_string());
    let args = [
        "idle",
        "-n",
        "30",
        "-t",
        "1",
        "--addr",
        &aa,
        "--addr",
        &ab,
        "--pid",
        &pa,
        "--pid",
        &pb,
        "--prefix",
        "x",
        "--password",
        &a.password,
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_ragnarok-load")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!((r["logged_in"].as_u64(), r["dropped"].as_u64()), (Some(30), Some(0)), "{r}");
    let procs = r["procs"].as_array().expect("one entry per --pid");
    assert_eq!(procs.len(), 2, "{r}");
    assert_eq!(procs[0]["pid"].as_u64(), Some(u64::from(a.pid())), "{r}");
    assert_eq!(procs[1]["pid"].as_u64(), Some(u64::from(b.pid())), "{r}");
    let each: u64 = procs.iter().map(|p| p["rss_kib"].as_u64().unwrap()).sum();
    assert_eq!(r["rss_kib"].as_u64(), Some(each), "the total is the sum: {r}");
    // Both servers saw their half log in, under the prefix's names.
    a.wait_log("\"x0\" logged in");
    b.wait_log("\"x1\" logged in");
    assert!(!a.log().iter().any(|l| l.contains("\"x1\" logged in")), "x1 went to the second");

    // One --pid: no per-process list (the output is as before).
    let output = Command::new(env!("CARGO_BIN_EXE_ragnarok-load"))
        .args(["idle", "-n", "4", "-t", "1", "--addr", &aa, "--pid", &pa])
        .args(["--password", &a.password])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(r.get("procs").is_none(), "{r}");
    assert_eq!(r["logged_in"].as_u64(), Some(4), "{r}");

    // Several addresses where only one makes sense are refused.
    let output = Command::new(env!("CARGO_BIN_EXE_ragnarok-load"))
        .args(["private", "--addr", &aa, "--addr", &ab])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}
