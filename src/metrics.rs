//! What the server counts, and the health and metrics endpoints that show
//! it on a separate local listener (`metrics_addr`): `GET /healthz` and
//! `GET /metrics` in the Prometheus text format 0.0.4.
//!
//! The text is written here rather than by `prometheus-client`: that crate
//! (0.26) writes OpenMetrics, where a counter's `# HELP` names the family
//! without `_total`, and `promtool check metrics` (the 0.0.4 parser that
//! Prometheus uses for `text/plain`) rejects every such counter.

use std::collections::BTreeMap;

use crate::cluster::ClusterStats;
use crate::effect::Count;
use crate::protocol::{ErrorCode, Kind};
use std::fmt::Write as _;

use mio::net::TcpListener;

/// The health and metrics listener.
pub type Endpoint = crate::endpoint::Endpoint<TcpListener>;

/// Counters, kept as plain integers on the one thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages from logged-in users, by `msgType` (refused ones as `refused`).
    pub received: BTreeMap<&'static str, u64>,
    /// Messages queued to recipients (one per recipient), by type.
    pub delivered: BTreeMap<&'static str, u64>,
    /// `Error`s sent, by code.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Connections refused at accept, by reason.
    pub connections_refused: BTreeMap<&'static str, u64>,
    /// Bytes of closed connections (open ones are added when encoding).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub handshake_failures: u64,
    pub connections_accepted: u64,
    /// `Resume`s by how they went.
    pub resumes: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn count(map: &mut BTreeMap<&'static str, u64>, key: &'static str, n: u64) {
        *map.entry(key).or_insert(0) += n;
    }

    /// An `Error` with this code was sent.
    pub fn refused(&mut self, code: ErrorCode) {
        Self::count(&mut self.refusals, code.as_str(), 1);
    }

    /// A message of this kind was queued to `recipients` connections.
    pub fn delivered(&mut self, kind: Kind, recipients: u64) {
        Self::count(&mut self.delivered, kind.as_str(), recipients);
    }

    pub fn record(&mut self, count: Count) {
        match count {
            Count::Received(kind) => Self::count(&mut self.received, kind.unwrap_or("refused"), 1),
            Count::Resume(how) => Self::count(&mut self.resumes, how, 1),
        }
    }
}

/// What only the event loop knows at the moment of a scrape.
pub struct Snapshot {
    pub users_online: usize,
    /// Sessions whose connection dropped, kept for their resume.
    pub sessions_away: usize,
    /// Connections by phase: handshaking, logging_in, chatting, closing.
    pub phases: [(&'static str, usize); 4],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub uptime_seconds: u64,
    /// Seconds until the certificate expires (negative: expired).
    pub certificate_expiry: Option<i64>,
    pub shutting_down: bool,
    pub cluster: Option<ClusterView>,
}

/// A cluster node as the metrics show it.
pub struct ClusterView {
    pub up: bool,
    pub stats: ClusterStats,
    /// Users logged in on this node.
    pub local_users: usize,
}

/// The Prometheus text (format 0.0.4) for a scrape.
pub fn encode(stats: &Stats, now: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, i64)]| {
        let _ = writeln!(out, "# HELP ragnarok_{name} {help}\n# TYPE ragnarok_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "ragnarok_{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v as i64)];
    let labelled = |label: &str, map: &BTreeMap<&'static str, u64>| -> Vec<(String, i64)> {
        map.iter().map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v as i64)).collect()
    };
    let up = if now.shutting_down { 0 } else { 1 };
    family("up", "gauge", "1 while serving, 0 while shutting down.", &one(up));
    family(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &one(now.uptime_seconds),
    );
    family("users_online", "gauge", "Users logged in.", &one(now.users_online as u64));
    family(
        "sessions_away",
        "gauge",
        "Sessions whose connection dropped, kept for a resume (resume_grace_secs).",
        &one(now.sessions_away as u64),
    );
    family(
        "resumes_total",
        "counter",
        "Resume requests, by result: exact (what was missed), reset, refused (wrong token).",
        &labelled("result", &stats.resumes),
    );
    let phases: Vec<_> =
        now.phases.iter().map(|(p, n)| (format!("{{phase=\"{p}\"}}"), *n as i64)).collect();
    family("connections", "gauge", "Open connections by phase.", &phases);
    family(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        &one(stats.connections_accepted),
    );
    family(
        "connections_refused_total",
        "counter",
        "Connections refused at accept (limits reached), by reason.",
        &labelled("reason", &stats.connections_refused),
    );
    family(
        "handshake_failures_total",
        "counter",
        "TLS or HTTP handshakes that failed or timed out.",
        &one(stats.handshake_failures),
    );
    family(
        "messages_received_total",
        "counter",
        "Messages from logged-in users, by type (refused: not accepted).",
        &labelled("type", &stats.received),
    );
    family(
        "deliveries_total",
        "counter",
        "Messages queued to recipients (one per recipient), by type.",
        &labelled("type", &stats.delivered),
    );
    family(
        "refusals_total",
        "counter",
        "Error messages sent to clients, by error code.",
        &labelled("code", &stats.refusals),
    );
    let get = |code| stats.refusals.get(code).copied().unwrap_or(0);
    family(
        "rate_limited_total",
        "counter",
        "Messages refused over the rate limit.",
        &one(get("rate_limited")),
    );
    family(
        "slow_readers_total",
        "counter",
        "Users cut off for not reading.",
        &one(get("slow_reader")),
    );
    family(
        "received_bytes_total",
        "counter",
        "Bytes received (after TLS).",
        &one(stats.bytes_in + now.bytes_in),
    );
    family(
        "sent_bytes_total",
        "counter",
        "Bytes sent (before TLS).",
        &one(stats.bytes_out + now.bytes_out),
    );
    if let Some(ClusterView { up, stats: c, local_users: local }) = &now.cluster {
        let counters = [
            (
                "events_total",
                "Events of the room received from the cluster, in its order.",
                c.events,
            ),
            ("published_total", "Messages of local users published to the cluster.", c.published),
            ("unavailable_total", "Requests refused with cluster_unavailable.", c.unavailable),
            ("link_downs_total", "Times the link to Redis broke.", c.link_downs),
            ("syncs_total", "Times this node registered its users and read the room.", c.syncs),
            ("connect_attempts_total", "Connections to Redis tried.", c.connect_attempts),
            ("dead_nodes_total", "Nodes that stopped renewing their lease.", c.dead_nodes),
        ];
        family("cluster_up", "gauge", "1 while the link to the cluster is up.", &one(*up as u64));
        family(
            "cluster_local_users",
            "gauge",
            "Users logged in on this node.",
            &one(*local as u64),
        );
        for (name, help, value) in counters {
            family(&format!("cluster_{name}"), "counter", help, &one(value));
        }
    }
    if let Some(expiry) = now.certificate_expiry {
        family(
            "tls_certificate_expiry_seconds",
            "gauge",
            "Seconds until the TLS certificate in use expires.",
            &[(String::new(), expiry)],
        );
    }
    out
}

/// The answer to one request on the metrics listener, `None` while the
/// request head is incomplete. `metrics` is called for `/metrics` only.
pub fn respond(
    request: &[u8],
    shutting_down: bool,
    metrics: impl FnOnce() -> String,
) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (status, content_type, body) = match req.parse(request) {
        Ok(httparse::Status::Partial) if request.len() < 4096 => return None,
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
            match (req.method, path) {
                (Some("GET" | "HEAD"), "/healthz") if shutting_down => {
                    ("503 Service Unavailable", "text/plain", "shutting down\n".to_owned())
                }
                (Some("GET" | "HEAD"), "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
                (Some("GET" | "HEAD"), "/metrics") => {
                    ("200 OK", "text/plain; version=0.0.4", metrics())
                }
                (Some("GET" | "HEAD"), _) => {
                    ("404 Not Found", "text/plain", "not found\n".to_owned())
                }
                _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned()),
            }
        }
        _ => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    let body = if req.method == Some("HEAD") { "" } else { body.as_str() };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    Some([head.as_bytes(), body.as_bytes()].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut stats = Stats::default();
        Stats::count(&mut stats.refusals, "rate_limited", 3);
        Stats::count(&mut stats.delivered, "Broadcast", 10);
        let now = Snapshot {
            users_online: 2,
            sessions_away: 0,
            phases: [("handshaking", 1), ("logging_in", 0), ("chatting", 2), ("closing", 0)],
            bytes_in: 5,
            bytes_out: 7,
            uptime_seconds: 9,
            certificate_expiry: Some(-1),
            shutting_down: false,
            cluster: Some(ClusterView {
                up: true,
                stats: ClusterStats { events: 4, ..ClusterStats::default() },
                local_users: 1,
            }),
        };
        let text = encode(&stats, &now);
        assert!(text.contains("ragnarok_cluster_up 1\n"), "{text}");
        assert!(text.contains("ragnarok_cluster_events_total 4\n"), "{text}");
        assert!(text.contains("ragnarok_rate_limited_total 3\n"), "{text}");
        assert!(text.contains("ragnarok_deliveries_total{type=\"Broadcast\"} 10\n"));
        assert!(text.contains("ragnarok_connections{phase=\"chatting\"} 2\n"));
        assert!(text.contains("ragnarok_tls_certificate_expiry_seconds -1\n"));
        let mut declared = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared = rest.split(' ').next().map(str::to_owned);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name.to_owned()), declared, "{line}");
            }
        }
    }

    #[test]
    fn health_follows_the_phase() {
        let get = |path: &str, stopping| {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            String::from_utf8(respond(request.as_bytes(), stopping, || "m\n".into()).unwrap())
                .unwrap()
        };
        assert!(get("/healthz", false).starts_with("HTTP/1.1 200 OK"));
        assert!(get("/healthz", true).starts_with("HTTP/1.1 503"));
        assert!(get("/metrics", false).ends_with("\r\n\r\nm\n"));
        assert!(get("/", false).starts_with("HTTP/1.1 404"));
        assert_eq!(respond(b"GET /metr", false, String::new), None);
    }
}
