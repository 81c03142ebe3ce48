//! `scripts/bench_report.py` turns the load generator's JSON lines of one
//! bench run into the report in BENCHMARKS.md: the median of repeated runs,
//! each goal judged against its line, and the ratios to the peers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fanout(server: &str, tls: bool, cpu: f64, per_sec: f64, p99: f64, lost: u32) -> String {
    format!(
        r#"{{"server":"{server}","tls":{tls},"args":"-n 1000 -c 10 -s 60 -t 3","result":{{"scenario":"fanout","users":1000,"logged_in":1000,"dropped":0,"seconds":3.0,"deliveries":1,"per_sec":{per_sec},"p50_ms":1.0,"p99_ms":{p99},"max_ms":20.0,"lost":{lost},"reordered":0,"cpu_us_per_delivery":{cpu},"sys_us_per_delivery":0.1,"rss_kib":5000,"peak_rss_kib":5000,"kib_per_user":2.2,"loadgen_cpu_pct":80.0}}}}"#
    )
}

fn idle(server: &str, tls: bool, users: u32, kib_per_user: f64) -> String {
    format!(
        r#"{{"server":"{server}","tls":{tls},"args":"-n {users} -t 3","result":{{"scenario":"idle","users":{users},"logged_in":{users},"seconds":3.0,"cpu_us_per_delivery":null,"rss_kib":4000,"peak_rss_kib":4000,"kib_per_user":{kib_per_user},"loadgen_cpu_pct":0.0}}}}"#
    )
}

fn private(server: &str, per_sec: f64, cpu: f64) -> String {
    format!(
        r#"{{"server":"{server}","tls":false,"args":"-k 50 -s 60 -t 3","result":{{"scenario":"private","pairs":50,"seconds":3.0,"deliveries":1,"per_sec":{per_sec},"p50_ms":0.5,"p99_ms":0.9,"cpu_us_per_delivery":{cpu},"rss_kib":3000,"kib_per_user":3.0,"loadgen_cpu_pct":97.0}}}}"#
    )
}

/// The fixture run: ws fanout three times (median 0.35 µs, one message lost
/// in one run), wss fanout once over its line, idle at 10,000 only over ws,
/// no joinstorm, private below 100k; a peer ("tokio") in ws fanout, idle
/// and private.
fn fixture() -> String {
    [
        fanout("ragnarok", false, 0.30, 2_000_000.0, 8.0, 0),
        fanout("ragnarok", false, 0.50, 1_500_000.0, 9.0, 0),
        fanout("ragnarok", false, 0.35, 1_800_000.0, 7.5, 1),
        fanout("ragnarok", true, 0.52, 1_900_000.0, 9.5, 0),
        idle("ragnarok", false, 1000, 1.7),
        idle("ragnarok", false, 10000, 1.65),
        private("ragnarok", 81_000.0, 12.0),
        fanout("tokio", false, 0.70, 900_000.0, 15.0, 0),
        idle("tokio", false, 1000, 280.5),
        private("tokio", 54_000.0, 18.0),
    ]
    .join("\n")
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("ragnarok-report-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report(results: &Path, into: Option<&Path>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_report.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(results).arg("scripts/bench.sh --test");
    if let Some(doc) = into {
        cmd.arg("--into").arg(doc);
    }
    cmd.output().expect("python3 runs")
}

/// The report's line that starts with `prefix` (a table row).
fn row<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[test]
fn report_takes_medians_judges_goals_and_compares_peers() {
    let dir = Dir::new("judge");
    let results = dir.0.join("results.jsonl");
    std::fs::write(&results, fixture()).unwrap();
    let out = report(&results, None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("Command: `scripts/bench.sh --test` · date: "), "{text}");

    // The three ws fanout runs are one row: the median run, every run's
    // CPU figure, and the lost messages of all runs summed.
    let fanout_ws = row(&text, "| ragnarok | ws | fanout ");
    assert!(fanout_ws.contains("0.350 (median of 3: 0.300 / 0.500 / 0.350)"), "{fanout_ws}");
    assert!(fanout_ws.contains("lost 1, reordered 0 (all runs)"), "{fanout_ws}");
    assert!(fanout_ws.contains("1,800,000 deliveries/s"), "{fanout_ws}");

    // Goals: met, missed, and not run.
    let goal = |prefix: &str| row(&text, prefix).rsplit('|').nth(1).unwrap().trim().to_owned();
    assert_eq!(goal("| fanout ws: server CPU per delivery"), "yes");
    assert_eq!(goal("| fanout wss: server CPU per delivery"), "no");
    assert_eq!(goal("| fanout ws: ≥ 1,000,000 deliveries/s"), "yes");
    assert_eq!(goal("| fanout ws: p99"), "no", "a lost message misses the goal");
    assert_eq!(goal("| idle ws, 10,000 users"), "yes");
    assert_eq!(goal("| idle wss, 10,000 users"), "—");
    assert!(row(&text, "| idle wss, 10,000 users").contains("not run"));
    assert_eq!(goal("| joinstorm ws: 10,000 users"), "—");
    assert_eq!(goal("| private ws, 50 pairs"), "no");

    // Ratios to the peer, from its median against ours.
    assert!(row(&text, "| figure | Ragnarok | tokio |").ends_with("tokio |"));
    for expected in [
        "| fanout ws: server CPU µs per delivery | 0.35 | 0.7 (2.0×) |",
        "| fanout ws: deliveries/s | 1,800,000 | 900,000 (2.0×) |",
        "| idle ws, 1,000 users: KiB per user | 1.7 | 280.5 (165.0×) |",
        "| private ws: round trips/s | 81,000 | 54,000 (1.5×) |",
        "| fanout wss: server CPU µs per delivery | 0.52 | not run |",
    ] {
        let label = &expected[..expected.find(" | ").unwrap() + 3];
        assert_eq!(row(&text, label), expected);
    }
}

#[test]
fn report_replaces_only_the_text_between_the_markers() {
    let dir = Dir::new("into");
    let results = dir.0.join("results.jsonl");
    std::fs::write(&results, fixture()).unwrap();
    let doc = dir.0.join("BENCHMARKS.md");
    std::fs::write(
        &doc,
        "# Before\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n# After\n",
    )
    .unwrap();
    let out = report(&results, Some(&doc));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&doc).unwrap();
    assert!(
        written.starts_with("# Before\n<!-- bench:start -->\nCommand: `scripts/bench.sh --test`"),
        "{written}"
    );
    assert!(written.ends_with("\n<!-- bench:end -->\n# After\n"), "{written}");
    assert!(!written.contains("old table"), "{written}");
    assert!(
        written.contains(
            "| private ws, 50 pairs: ≥ 100,000 round trips/s | 81,000 round trips/s | no |"
        )
    );

    // A document without the markers is refused and left as it was.
    std::fs::write(&doc, "# No markers\n").unwrap();
    let out = report(&results, Some(&doc));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("markers"));
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), "# No markers\n");
}
