//! Test harness: starts the real `ragnarok` binary on port 0 (ws, or wss
//! with a certificate made at test time) and drives it with real WebSocket
//! clients over real sockets. Every read has a timeout.
//!
//! A library of its own (`ragnarok-testkit`, a dev-dependency), compiled
//! once and linked by the three test binaries: `tests/server` (one server
//! over sockets), `tests/cluster` (Redis and several nodes), `tests/tools`
//! (the command line, the load generator, the soak, the bench report).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Several nodes on one Redis (`tests/cluster`).
pub mod cluster;
/// The end-to-end private message scheme (`key_relay`, `examples/e2e_peer.rs`).
pub mod e2e;
/// The end-to-end encrypted room (`e2e_room`): sender keys over `e2e`.
pub mod e2e_room;
/// A TCP relay that can drop every connection for real (`resume`).
pub mod relay;
/// A client that logs in resumably and resumes (`resume`).
pub mod resume;

pub use relay::Relay;
pub use resume::{Resumable, Ticket, assert_exact, assert_reset, seq_of, without_seq};

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const PASSWORD: &str = "963";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("ragnarok-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `localhost`, PEM encoded.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCert {
    pub fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// From PEM files made elsewhere (e.g. by openssl).
    pub fn from_pem(cert_pem: String, key_pem: String) -> Self {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        TestCert { cert_pem, key_pem, der }
    }

    pub fn client_config(der: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// The path of the built server binary, `target/<profile>/ragnarok`.
pub fn binary() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| cargo_bin("ragnarok"))
}

/// A binary of this package, found beside the running test binary (a
/// library cannot use `env!("CARGO_BIN_EXE_…")`, which cargo sets only for
/// integration tests). Cargo builds a package's binaries before running its
/// integration tests, in the folder above the tests' own (`deps/`).
fn cargo_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe.parent().expect("the test binary's folder");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("the target folder");
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} not found: run the tests with `cargo test`", path.display());
    path.into_os_string().into_string().expect("a UTF-8 path")
}

/// Within a test binary libtest runs tests side by side (8 threads: see
/// `.cargo/config.toml`); most of them wait on timers and sockets. Two kinds
/// take this lock: those that load the machine take [`busy`] (any number of
/// them at once), those that measure a rate or a short deadline take
/// [`quiet`] (one at a time, never beside a busy one).
static LOAD: RwLock<()> = RwLock::new(());

/// For a test that loads the machine (a load generator, thousands of
/// messages) but checks only what arrived: it never runs beside a [`quiet`]
/// test. A test that failed while holding it does not stop the others.
pub fn busy() -> RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// For a test that measures a rate or a deadline of a few seconds, which a
/// loaded machine could miss: no [`busy`] or other quiet test runs beside
/// it (tests that take neither still do; they mostly wait).
pub fn quiet() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The base config for tests: the seed's keys, port 0, a password, rate
/// limiting at its defaults. The per-address rates of new connections and
/// logins, and the room-wide login rate, are off: every test client comes
/// from 127.0.0.1, and many tests open more than a minute's worth; the tests
/// of those rates set them.
pub fn base_config() -> Value {
    json!({
        "connections_per_minute_per_ip": 0,
        "logins_per_minute_per_ip": 0,
        "room_logins_per_sec": 0,
        "SSL": false,
        "SSL_Cert": "cert.pem",
        "SSL_Key": "key.pem",
        "server_ip": "127.0.0.1",
        "server_port": 0,
        "server_name": "Test Room",
        "server_password": PASSWORD,
    })
}

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub password: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Plain ws, with `overrides` merged into the base config.
    pub fn start(overrides: Value) -> Self {
        Self::launch(overrides, None)
    }

    /// wss with a certificate made for this test.
    pub fn start_tls(overrides: Value) -> Self {
        Self::launch(overrides, Some(TestCert::new()))
    }

    /// wss with the given certificate and key.
    pub fn start_with_cert(overrides: Value, cert: TestCert) -> Self {
        Self::launch(overrides, Some(cert))
    }

    /// Both flavours, for tests that must hold over ws and wss.
    pub fn both(overrides: Value) -> [Self; 2] {
        [Self::start(overrides.clone()), Self::start_tls(overrides)]
    }

    fn launch(overrides: Value, tls: Option<TestCert>) -> Self {
        let dir = temp_dir("server");
        let mut config = base_config();
        for (k, v) in overrides.as_object().unwrap() {
            config[k] = v.clone();
        }
        let mut client_tls = None;
        if let Some(cert) = tls {
            config["SSL"] = json!(true);
            std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
            std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
            client_tls = Some(TestCert::client_config(&cert.der));
        }
        let password = config["server_password"].as_str().unwrap_or("").to_owned();
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, addr) = spawn_server(&path, &log);
        TestServer { child, addr, dir, password, tls: client_tls, log }
    }

    /// A restart: kill -9, then the binary again with the same config file
    /// (and folder: the state file stays), on a new port (`addr` changes;
    /// the config says port 0). The log goes on in the same list.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn_server(&self.dir.join("config.json"), &self.log);
        self.child = child;
        self.addr = addr;
    }

    /// From now on, clients trust only this certificate.
    pub fn trust(&mut self, der: &CertificateDer<'static>) {
        self.tls = Some(TestCert::client_config(der));
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        format!("{scheme}://localhost:{}/", self.addr.port())
    }

    /// A raw socket to the server (TLS already negotiated on a wss server).
    pub fn stream(&self) -> Stream {
        self.stream_over(TcpStream::connect(self.addr).unwrap())
    }

    /// `tcp`, connected to this server (with socket options of its own set
    /// before the connect), as [`TestServer::stream`] makes it.
    pub fn stream_over(&self, tcp: TcpStream) -> Stream {
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        }
    }

    /// An open WebSocket, not logged in.
    pub fn connect(&self) -> Client {
        let (ws, _) = tungstenite::client::client(self.url(), self.stream()).expect("handshake");
        Client { ws }
    }

    /// An open WebSocket to this server over a connection to `via` (a
    /// [`Relay`] to it): the request and TLS are this server's.
    pub fn connect_via(&self, via: SocketAddr) -> Client {
        let tcp = TcpStream::connect(via).expect("connect to the relay");
        let (ws, _) =
            tungstenite::client::client(self.url(), self.stream_over(tcp)).expect("handshake");
        Client { ws }
    }

    /// An open WebSocket whose upgrade request carries these extra headers.
    pub fn connect_with(&self, headers: &[(&'static str, &str)]) -> Client {
        use tungstenite::client::IntoClientRequest;
        let mut request = self.url().into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(*name, value.parse().unwrap());
        }
        let (ws, _) = tungstenite::client::client(request, self.stream()).expect("handshake");
        Client { ws }
    }

    /// Sends the password and `name` on an open WebSocket; the welcome
    /// (`ServerName`, `OnlineUsers`) is read.
    pub fn log_in(&self, mut client: Client, name: &str) -> Client {
        client.send_text(&self.password);
        client.send_text(name);
        assert_eq!(client.recv_json()["ServerName"], "Test Room");
        assert_eq!(client.recv_json()["msgType"], "OnlineUsers");
        client
    }

    /// A logged-in client; the welcome (`ServerName`, `OnlineUsers`) is read.
    pub fn login(&self, name: &str) -> Client {
        let mut client = self.connect();
        client.send_text(&self.password);
        client.send_text(name);
        let welcome = client.recv_json();
        assert_eq!(welcome["ServerName"], "Test Room", "{welcome}");
        let users = client.recv_json();
        assert_eq!(users["msgType"], "OnlineUsers", "{users}");
        client
    }

    /// Logs in two users; the first has read the news of the second's join,
    /// so both start with nothing pending.
    pub fn login_two(&self, first: &str, second: &str) -> (Client, Client) {
        let mut a = self.login(first);
        let b = self.login(second);
        a.recv_type("OnlineUsers");
        (a, b)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?} in {:#?}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(status.unwrap().success());
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < TIMEOUT, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A WebSocket opened over a raw stream, for clients that write their
    /// own frames: the 101 response has been read.
    pub fn raw_upgrade(&self) -> Stream {
        self.upgrade(self.stream())
    }

    fn upgrade(&self, mut stream: Stream) -> Stream {
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        stream
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the binary with the config at `path`, its stderr lines appended to
/// `log`, until it says where it listens.
fn spawn_server(path: &Path, log: &Arc<Mutex<Vec<String>>>) -> (Child, SocketAddr) {
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ragnarok");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or("");
                let addr = url.split("://").nth(1).unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(addr) => (child, addr.parse().expect("address in the log")),
        Err(_) => {
            let _ = child.kill();
            panic!("server did not start: {:?}", log.lock().unwrap());
        }
    }
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What a client saw at the end of a connection.
#[derive(Debug)]
pub enum Ending {
    Close(Option<CloseFrame>),
    /// The socket closed without a Close frame.
    Eof,
}

impl Ending {
    pub fn code(&self) -> Option<u16> {
        match self {
            Ending::Close(Some(frame)) => Some(frame.code.into()),
            _ => None,
        }
    }
}

pub struct Client {
    pub ws: WebSocket<Stream>,
}

impl Client {
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    pub fn send(&mut self, message: Message) {
        self.ws.send(message).expect("send");
    }

    /// The next data message (pings are answered by tungstenite).
    pub fn recv(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(message) => return message,
                // A signal to the test process (a child it ran exiting): again.
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => panic!("no message: {e}"),
            }
        }
    }

    pub fn recv_json(&mut self) -> Value {
        match self.recv() {
            Message::Text(text) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// Skips messages until one with this `msgType`.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let value = self.recv_json();
            if value["msgType"] == kind {
                return value;
            }
        }
    }

    /// Reads until the connection ends, returning the JSON messages seen
    /// before that and how it ended.
    pub fn recv_until_end(&mut self) -> (Vec<Value>, Ending) {
        let mut seen = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => seen.push(serde_json::from_str(&text).expect("JSON")),
                Ok(Message::Close(frame)) => {
                    // Let tungstenite answer and see the end of the stream.
                    let _ = self.ws.flush();
                    return (seen, Ending::Close(frame));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    panic!("connection still open after {TIMEOUT:?}; saw {seen:?}")
                }
                Err(_) => return (seen, Ending::Eof),
            }
        }
    }

    /// Asserts that nothing arrives within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.ws.get_mut().tcp().set_read_timeout(Some(wait)).unwrap();
        match self.ws.read() {
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.ws.get_mut().tcp().set_read_timeout(Some(TIMEOUT)).unwrap();
    }
}

/// A client frame (masked, as RFC 6455 requires) with this opcode and payload.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(true, opcode, payload)
}

/// A masked client frame with FIN set (`fin`: the last of its message) or
/// not (a fragment, more to come).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Writes `frame` again and again for at most `bytes` bytes, until the
/// server stops taking them (the write times out after `stall`). Returns
/// the bytes written.
pub fn write_until_stalled(
    stream: &mut Stream,
    frame: &[u8],
    bytes: usize,
    stall: Duration,
) -> usize {
    stream.tcp().set_write_timeout(Some(stall)).unwrap();
    let batch: Vec<u8> =
        frame.iter().copied().cycle().take(frame.len() * (16384 / frame.len()).max(1)).collect();
    let (mut written, mut at) = (0, 0);
    while written < bytes {
        match stream.write(&batch[at..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                written += n;
                at = (at + n) % batch.len();
            }
        }
    }
    written
}

/// What [`RawClient::next`] found.
#[derive(Debug)]
pub enum Got {
    /// One whole frame: its opcode (1 text, 8 close, ...) and payload.
    Frame { opcode: u8, payload: Vec<u8> },
    /// Nothing within the wait.
    Quiet,
    /// The connection ended (end of stream, or reset).
    End,
}

/// A client over a raw stream that counts rather than parses: it writes
/// its frames by hand and hands back every frame the server sends as its
/// opcode and payload (server frames are never masked), so that tests can
/// measure bytes at rates a client decoding every JSON message could not
/// keep up with. Every read has a timeout.
pub struct RawClient {
    pub stream: Stream,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    start: usize,
}

impl TestServer {
    /// An open [`RawClient`], not logged in.
    pub fn raw_open(&self) -> RawClient {
        RawClient { stream: self.raw_upgrade(), buf: Vec::new(), start: 0 }
    }

    /// A logged-in [`RawClient`]; the welcome (`ServerName`, `OnlineUsers`)
    /// is read.
    pub fn raw_login(&self, name: &str) -> RawClient {
        self.raw_login_over(self.stream(), name)
    }

    /// [`TestServer::raw_login`] over a stream of the caller's
    /// ([`TestServer::stream_over`]).
    pub fn raw_login_over(&self, stream: Stream, name: &str) -> RawClient {
        let mut client = RawClient { stream: self.upgrade(stream), buf: Vec::new(), start: 0 };
        client.send_text(&self.password);
        client.send_text(name);
        let welcome = client.next_json();
        assert_eq!(welcome["ServerName"], "Test Room", "{welcome}");
        let users = client.next_json();
        assert_eq!(users["msgType"], "OnlineUsers", "{users}");
        client
    }
}

impl RawClient {
    pub fn send_text(&mut self, text: &str) {
        self.stream.write_all(&masked_frame(0x1, text.as_bytes())).expect("send");
    }

    /// The next frame, if one comes within `wait`.
    pub fn next(&mut self, wait: Duration) -> Got {
        loop {
            if let Some((opcode, payload, used)) = server_frame(&self.buf[self.start..]) {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Got::Frame { opcode, payload };
            }
            self.stream.tcp().set_read_timeout(Some(wait)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::End,
                Ok(n) => {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Got::Quiet;
                }
                Err(_) => return Got::End,
            }
        }
    }

    /// The next text frame as JSON, within [`TIMEOUT`].
    pub fn next_json(&mut self) -> Value {
        match self.next(TIMEOUT) {
            Got::Frame { opcode: 1, payload } => serde_json::from_slice(&payload).expect("JSON"),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }
}

/// The first whole frame in `buf` as the server sends it (unmasked): its
/// opcode, payload, and the bytes it took.
fn server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    assert_eq!(b1 & 0x80, 0, "a server frame must not be masked");
    let (len, head) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(head..head + len)?;
    Some((b0 & 0x0f, payload.to_vec(), head + len))
}

pub fn broadcast(text: &str) -> Value {
    json!({"msgType": "Broadcast", "text": text})
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM
/// files in `dir` (for a server the test starts with TLS, e.g. Redis).
pub struct CaCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca_signed(dir: &std::path::Path) -> CaCerts {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Ragnarok test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "test server");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs =
        CaCerts { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

/// Runs `ragnarok ctl --config CONFIG ARGS` (the real binary): (exit code,
/// stdout, stderr).
pub fn ctl(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run ragnarok ctl");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

impl TestServer {
    /// `ragnarok ctl ARGS` against this server; it must succeed: its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = ctl(&self.dir.join("config.json"), args);
        assert_eq!(code, 0, "ctl {args:?}: {out} {err}");
        out
    }

    /// `ragnarok ctl --json ARGS`: the answer's data.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&all)).expect("JSON on stdout")
    }
}
