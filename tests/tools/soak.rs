//! A short soak against the real server, over ws and wss: users come and go,
//! broadcast and send private messages, slow readers are cut off, bad inputs
//! of every kind are mixed in; nothing is lost or reordered, every bad input
//! gets its answer, and the server's open descriptors are back to their
//! number after each cycle (`ragnarok-load soak`, see its `soak.rs`). Over
//! ws, with random cuts (`--cuts`): users' TCP connections dropped by a relay
//! in the load generator, resumed; nothing lost or repeated across them, no
//! reset, nobody seen leaving.

use ragnarok_testkit::*;
use serde_json::{Value, json};
use std::process::Command;

fn soak(server: &TestServer, secs: u32, extra: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragnarok-load"));
    cmd.args(["soak", "-t", &secs.to_string(), "-n", "60"])
        .args(extra)
        .args(["--addr", &server.addr.to_string(), "--password", &server.password])
        .args(["--pid", &server.pid().to_string()]);
    if server.is_tls() {
        cmd.arg("--tls").arg(server.dir.join("cert.pem"));
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{report}");
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {report}"))
}

#[test]
fn a_short_soak_loses_nothing_answers_everything_and_leaks_no_descriptors() {
    // No lock: the soak takes a sixth of a core for 30 s and its deadlines
    // are tens of seconds; the load generators and the open loop run beside it.
    // Everything comes from 127.0.0.1: room for 60 users and the probes. The
    // half-open probes are answered after these timeouts (defaults 10, 60).
    let config = json!({
        "max_connections_per_ip": 256,
        "handshake_timeout_secs": 2,
        "login_timeout_secs": 5,
    });
    // ws and wss side by side: the soak mostly waits (timeouts, quiet).
    let servers = TestServer::both(config);
    let reports: Vec<Value> = std::thread::scope(|scope| {
        let runs: Vec<_> = servers
            .iter()
            .map(|server| {
                // ws with cuts, wss without (the old protocol alone). With
                // cuts, slow readers wait for their turn after the cuts
                // (soak.rs, CUT_TURN) and would add 10 s: wss has them.
                let extra: &[&str] = if server.is_tls() {
                    &["--slow", "2"]
                } else {
                    &["--cuts", "3", "--slow", "0"]
                };
                scope.spawn(move || soak(server, 10, extra))
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for (server, r) in servers.iter().zip(reports) {
        assert_eq!(r["ok"], true, "{r}");
        for key in ["lost", "reordered", "unmatched", "problems", "bad_inputs_wrong"] {
            assert_eq!(r[key], 0, "{key}: {r}");
        }
        let count = |key: &str| r[key].as_u64().unwrap_or(0);
        assert!(count("joins") > 60 && count("left") == count("joins"), "churn: {r}");
        assert!(count("deliveries") > 1000 && count("privates_delivered") > 0, "traffic: {r}");
        if server.is_tls() {
            assert!(count("slow_cut_off") >= 2, "slow readers cut off: {r}");
        }
        assert!(count("bad_inputs_ok") >= 20 && count("bad_input_kinds") >= 10, "bad inputs: {r}");
        assert_eq!(r["fds_after"], r["fds_baseline"], "{r}");
        for key in
            ["duplicated", "resets", "seen_leaving", "seen_joining", "seq_faults", "before_resumed"]
        {
            assert_eq!(r[key], 0, "{key}: {r}");
        }
        if !server.is_tls() {
            // 3 a second for 10 s (only users online a second, with nothing
            // unsent or unanswered, are cut): every cut resumed.
            assert!(count("cuts") >= 10 && count("resumes") == count("cuts"), "cuts: {r}");
            assert!(count("missed_replayed") > 0, "nothing missed in the cuts: {r}");
        }
    }
}
