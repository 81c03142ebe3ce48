//! The load generator's `floor` scenario against its bare `relay`: pairs'
//! messages come back to the pair that sent them (the floor checks every
//! byte), and the figures are reported. It never checks their speed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pairs_bounce_messages_through_the_relay() {
    let _busy = ragnarok_testkit::busy(); // loads the machine
    let bin = env!("CARGO_BIN_EXE_ragnarok-load");
    let mut relay = Relay(
        Command::new(bin)
            .args(["relay", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(relay.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("relay listening on ").expect(&line).to_owned();

    let pid = relay.0.id().to_string();
    let output = Command::new(bin)
        .args(["floor", "--addr", &addr, "-k", "4", "-s", "300", "-t", "1", "--pid", &pid])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(r["pairs"], 4, "{r}");
    assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");
    assert!(r["cpu_us_per_delivery"].as_f64().is_some(), "the relay's CPU was sampled: {r}");
    let own = r["loadgen_cpu_pct"].as_f64().expect("the driver's own CPU was sampled");
    assert!((0.0..=105.0).contains(&own), "{r}");
}
