//! Cluster harness: a real `redis-server` on a free port, several
//! `ragnarok` nodes sharing it (same `redis_url`, a `cluster_name` unique to
//! the test), and users whose every read has a deadline.
//!
//! Nothing here is ever skipped: without `redis-server` the tests fail,
//! saying how to install it.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::{Client, PASSWORD, TIMEOUT, TestServer, base_config, binary, temp_dir};

/// How long a new node may take to join the cluster (its logins answered
/// with `cluster_unavailable` meanwhile).
pub const READY: Duration = Duration::from_secs(15);
/// How long presence may take to converge across nodes in normal operation.
pub const CONVERGE: Duration = Duration::from_secs(10);

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A `cluster_name` no other test uses.
pub fn unique_cluster_name(tag: &str) -> String {
    let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
    format!("{tag}-{}-{n}", std::process::id())
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `deadline` from now.
pub fn after(wait: Duration) -> Instant {
    Instant::now() + wait
}

fn redis_server_path() -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join("redis-server")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "redis-server not found: install it with `apt install redis-server` \
             (the cluster tests need a real Redis)"
        )
    })
}

/// Sends `PING` on a fresh connection; true on `+PONG`.
fn redis_pings(port: u16) -> bool {
    let addr = ([127, 0, 0, 1], port).into();
    let Ok(mut tcp) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    if tcp.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    tcp.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A `redis-server` of this test's own, on 127.0.0.1, no persistence.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub fn start() -> Self {
        let dir = temp_dir("redis");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = Self::spawn(&dir, port) {
                return Redis { child, port, dir };
            }
        }
        panic!("redis-server did not start on a free port (5 tries); see {}", dir.display());
    }

    /// redis-server on `port`, once it answers; None if it exits (port taken).
    fn spawn(dir: &PathBuf, port: u16) -> Option<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("redis.log"))
            .unwrap();
        let mut child = Command::new(redis_server_path())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        let deadline = after(Duration::from_secs(10));
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if redis_pings(port) {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    /// Runs one command (inline form) on a connection of its own and
    /// returns the first line of the reply.
    pub fn command(&self, command: &str) -> String {
        let port = self.url().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") && tcp.read(&mut byte).unwrap_or(0) == 1 {
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// kill -9; nothing listens on the port afterwards.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// kill -9, then a new, empty redis-server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = after(Duration::from_secs(10));
        loop {
            if let Some(child) = Self::spawn(&self.dir, self.port) {
                self.child = child;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    pub fn stop(&self) {
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGSTOP) }, 0);
    }

    /// SIGCONT.
    pub fn cont(&self) {
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGCONT) }, 0);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis and the nodes of one cluster on it.
pub struct Cluster {
    pub redis: Redis,
    pub name: String,
    pub nodes: Vec<TestServer>,
    overrides: Value,
}

impl Cluster {
    /// `n` nodes, each with `overrides` merged into the test config.
    pub fn start(n: usize, overrides: Value) -> Self {
        let redis = Redis::start();
        let mut cluster =
            Cluster { redis, name: unique_cluster_name("t"), nodes: Vec::new(), overrides };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster
    }

    /// The config overrides of a node of this cluster.
    pub fn node_config(&self) -> Value {
        let mut config = self.overrides.clone();
        config["redis_url"] = json!(self.redis.url());
        config["cluster_name"] = json!(self.name);
        config
    }

    /// Starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        self.nodes.push(TestServer::start(self.node_config()));
        self.nodes.len() - 1
    }

    /// Logs `name` in on node `node`, retrying while the node answers
    /// `cluster_unavailable` (it may still be joining) for up to `READY`.
    pub fn login(&self, node: usize, name: &str) -> User {
        let deadline = after(READY);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match try_login(&self.nodes[node], name, deadline) {
                Ok(user) => return user,
                Err(error) if error["code"] == "cluster_unavailable" => last = error,
                Err(other) => panic!("login of {name:?} on node {node} refused: {other}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("login of {name:?} on node {node}: still {last} after {READY:?}");
    }

    /// Every node's log, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let tail = &log[log.len().saturating_sub(40)..];
            out += &format!("--- node {i} ({}), last {} log lines:\n", node.addr, tail.len());
            for line in tail {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cluster {} on {}:\n{}", self.name, self.redis.url(), self.logs());
        }
    }
}

/// Opens a WebSocket to `server` and sends the password and `name`. Ok with
/// the user once the welcome (`ServerName`, `OnlineUsers`) has been read;
/// Err with the first message otherwise (an `Error`, or whatever came).
pub fn try_login(server: &TestServer, name: &str, deadline: Instant) -> Result<User, Value> {
    let mut client = server.connect();
    client.send_text(PASSWORD);
    client.send_text(name);
    let mut user = User::new(name, client);
    let Some(first) = user.next(deadline) else {
        panic!("login of {name:?} on {}: no answer in time", server.addr);
    };
    if first.get("ServerName").is_none() {
        return Err(first);
    }
    let Some(list) = user.next(deadline) else {
        panic!("login of {name:?} on {}: no OnlineUsers after {first}", server.addr);
    };
    assert_eq!(list["msgType"], "OnlineUsers", "login of {name:?}: {list}");
    assert!(user.users.contains(name), "{name:?} not in its own welcome list {list}");
    Ok(user)
}

/// Fails unless `m` is no `Error` or one of those a cluster in trouble may
/// send: `cluster_unavailable` (something was refused) or `messages_lost`
/// (the node lost its link for a while).
pub fn only_trouble_errors(who: &str, m: &Value) {
    if m["msgType"] == "Error" {
        let code = m["code"].as_str().unwrap_or("");
        assert!(["cluster_unavailable", "messages_lost"].contains(&code), "{who}: {m}");
    }
}

/// The names of an `OnlineUsers` / `UsersJoined` / `UsersLeft` message.
pub fn names(v: &Value) -> BTreeSet<String> {
    v["Users"]
        .as_array()
        .unwrap_or_else(|| panic!("no Users in {v}"))
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect()
}

/// A set of names: `set(["alice", "bob"])`, `set(&names)`.
pub fn set<S: ToString>(names: impl IntoIterator<Item = S>) -> BTreeSet<String> {
    names.into_iter().map(|n| n.to_string()).collect()
}

/// A logged-in user who keeps track of who is online from the presence
/// messages it reads.
pub struct User {
    pub name: String,
    pub client: Client,
    /// Who is online, as this user's `OnlineUsers` / `UsersJoined` /
    /// `UsersLeft` messages say.
    pub users: BTreeSet<String>,
    /// Whether the last presence message read was a full `OnlineUsers` list.
    full_list_last: bool,
    /// The last messages read, for failure reports.
    recent: VecDeque<Value>,
}

impl User {
    pub fn new(name: &str, client: Client) -> Self {
        User {
            name: name.to_owned(),
            client,
            users: BTreeSet::new(),
            full_list_last: false,
            recent: VecDeque::new(),
        }
    }

    pub fn send(&mut self, value: Value) {
        self.client.send_json(value);
    }

    /// The last messages read, oldest first.
    pub fn recent(&self) -> String {
        let lines: Vec<String> = self.recent.iter().map(|m| m.to_string()).collect();
        format!("[{}]", lines.join(",\n "))
    }

    /// The next JSON message before `deadline`; Ok(None) once the deadline
    /// has passed; Err saying how if the connection ended.
    pub fn try_next(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let tcp = self.client.ws.get_mut().tcp();
            tcp.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let read = self.client.ws.read();
            let _ = self.client.ws.get_mut().tcp().set_read_timeout(Some(TIMEOUT));
            match read {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON");
                    self.track(&value);
                    if self.recent.len() == 20 {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(value.clone());
                    return Ok(Some(value));
                }
                Ok(Message::Close(frame)) => {
                    let _ = self.client.ws.flush();
                    return Err(format!("Close {frame:?}"));
                }
                Ok(_) => continue,
                // A signal may interrupt a blocking read (seen once in CI
                // while a node was being killed): read again.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The next JSON message before `deadline`, None once it has passed.
    /// Panics if the connection ends.
    pub fn next(&mut self, deadline: Instant) -> Option<Value> {
        match self.try_next(deadline) {
            Ok(m) => m,
            Err(how) => {
                panic!("{}: disconnected ({how}); last messages: {}", self.name, self.recent())
            }
        }
    }

    fn track(&mut self, m: &Value) {
        match m["msgType"].as_str() {
            Some("OnlineUsers") => {
                self.users = names(m);
                self.full_list_last = m.get("more").is_none();
            }
            Some("UsersJoined") => {
                self.users.extend(names(m));
                self.full_list_last = false;
            }
            Some("UsersLeft") => {
                for n in names(m) {
                    self.users.remove(&n);
                }
                self.full_list_last = false;
            }
            _ => {}
        }
    }

    /// Reads until a message for which `wanted` is true; panics at the
    /// deadline, saying what was awaited.
    pub fn wait_for(
        &mut self,
        deadline: Instant,
        what: &str,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            match self.next(deadline) {
                Some(m) if wanted(&m) => return m,
                Some(_) => {}
                None => panic!(
                    "{}: no {what} within {:?}; last messages: {}",
                    self.name,
                    start.elapsed(),
                    self.recent()
                ),
            }
        }
    }

    /// Reads until this user's picture of who is online is `expected`.
    pub fn wait_users(&mut self, deadline: Instant, expected: &BTreeSet<String>) {
        let start = Instant::now();
        while self.users != *expected {
            if self.next(deadline).is_none() {
                panic!(
                    "{}: online users still {:?} after {:?}, expected {:?}; last messages: {}",
                    self.name,
                    self.users,
                    start.elapsed(),
                    expected,
                    self.recent()
                );
            }
        }
    }

    /// Reads until an `OnlineUsers` message (a full list, as pushed in a
    /// small room or asked for) lists exactly `expected`, unless the last
    /// presence message read already was that list.
    pub fn wait_full_list(&mut self, deadline: Instant, expected: &BTreeSet<String>) {
        if self.full_list_last && self.users == *expected {
            return;
        }
        let what = format!("OnlineUsers listing exactly {expected:?}");
        self.wait_for(deadline, &what, |m| m["msgType"] == "OnlineUsers" && names(m) == *expected);
    }

    /// Asks for `OnlineUsers` and returns the next `OnlineUsers` message.
    pub fn ask_users(&mut self, deadline: Instant) -> BTreeSet<String> {
        self.send(json!({"msgType": "OnlineUsers"}));
        let m = self.wait_for(deadline, "OnlineUsers answer", |m| m["msgType"] == "OnlineUsers");
        names(&m)
    }
}

/// Writes a cluster node's config (the base config, `overrides`) and runs
/// the binary until it exits, for up to `wait`. Returns the exit status and
/// stderr; panics if it is still running then.
pub fn run_to_exit(overrides: Value, wait: Duration) -> (ExitStatus, String) {
    let dir = temp_dir("node");
    let mut config = base_config();
    for (k, v) in overrides.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("start ragnarok");
    let deadline = after(wait);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            panic!("the node still runs after {wait:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (status, stderr)
}

/// Has `a` and `b` (users on different nodes) send numbered broadcasts
/// until each has heard the other, within `within`; `check` sees every
/// message read meanwhile.
pub fn until_broadcasts_cross(
    a: &mut User,
    b: &mut User,
    within: Duration,
    mut check: impl FnMut(&str, &Value),
) -> Duration {
    let start = Instant::now();
    let deadline = start + within;
    let (mut a_heard, mut b_heard) = (false, false);
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let mut round = 0;
    while !(a_heard && b_heard) {
        assert!(
            Instant::now() < deadline,
            "broadcasts do not cross nodes within {within:?} \
             ({a_name} heard {b_name}: {a_heard}, {b_name} heard {a_name}: {b_heard})"
        );
        a.send(json!({"msgType": "Broadcast", "text": format!("round {round}")}));
        b.send(json!({"msgType": "Broadcast", "text": format!("round {round}")}));
        round += 1;
        for (user, heard, other) in
            [(&mut *a, &mut a_heard, &b_name), (&mut *b, &mut b_heard, &a_name)]
        {
            let window = after(Duration::from_millis(150)).min(deadline);
            while let Some(m) = user.next(window) {
                check(&user.name, &m);
                *heard |= m["msgType"] == "Broadcast" && m["SrcUser"] == **other;
            }
        }
    }
    start.elapsed()
}
