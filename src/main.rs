//! The `ragnarok` binary: command line, config, logging, then the event
//! loop. Every startup failure is one line on stderr and a sysexits code.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use ragnarok::cluster::Cluster;
use ragnarok::config::{Cluster as ClusterConfig, Config, ConfigError};
use ragnarok::redis;
use ragnarok::server::Server;
use ragnarok::tls;

const USAGE: &str = "\
Usage: ragnarok [--config PATH] [--check-config]
       ragnarok ctl [--config PATH] [--json] COMMAND   (ragnarok ctl --help lists them)
       ragnarok hash-password    (a password on stdin: its hash for the config's \"admins\")

A self-hosted WebSocket chatroom server.

Options:
  -c, --config PATH   config file (default: config.json)
      --check-config  validate the config, certificate and key (and reach Redis), then exit
  -h, --help          show this help
  -V, --version       show the version

The log level comes from the config's \"log_level\"; RUST_LOG overrides it.";

/// A reason to stop before serving, with its sysexits code.
enum Fatal {
    Usage(String),
    Config(String),
    Unavailable(String),
    NoPermission(String),
    Software(String),
}

impl Fatal {
    fn exit_code(&self) -> u8 {
        match self {
            Fatal::Usage(_) => 64,
            Fatal::Unavailable(_) => 69,
            Fatal::Software(_) => 70,
            Fatal::NoPermission(_) => 77,
            Fatal::Config(_) => 78,
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Usage(m) => write!(f, "{m}\nTry 'ragnarok --help'."),
            Fatal::Config(m)
            | Fatal::Unavailable(m)
            | Fatal::NoPermission(m)
            | Fatal::Software(m) => f.write_str(m),
        }
    }
}

enum Command {
    Help,
    Version,
    Serve { config: PathBuf, check_only: bool },
    Ctl { config: Option<PathBuf>, json: bool, args: Vec<String> },
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, Fatal> {
    let mut args = args.by_ref().peekable();
    if args.peek().map(String::as_str) == Some("ctl") {
        args.next();
        return parse_ctl_args(args);
    }
    let mut config = PathBuf::from("config.json");
    let mut check_only = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--check-config" => check_only = true,
            "-c" | "--config" => match args.next() {
                Some(path) => config = PathBuf::from(path),
                None => return Err(Fatal::Usage(format!("{arg} needs a file path"))),
            },
            _ => match arg.strip_prefix("--config=") {
                Some(path) => config = PathBuf::from(path),
                None => return Err(Fatal::Usage(format!("unknown argument {arg:?}"))),
            },
        }
    }
    Ok(Command::Serve { config, check_only })
}

/// `ragnarok ctl [--config PATH] [--json] COMMAND ...`: the options come
/// first, everything from the command on is the command's.
fn parse_ctl_args(mut args: impl Iterator<Item = String>) -> Result<Command, Fatal> {
    let (mut config, mut json) = (None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" => json = true,
            "-c" | "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(Fatal::Usage(format!("{arg} needs a file path"))),
            },
            _ => {
                let args = std::iter::once(arg).chain(args).collect();
                return Ok(Command::Ctl { config, json, args });
            }
        }
    }
    Ok(Command::Ctl { config, json, args: Vec::new() })
}

/// `ragnarok ctl`: asks the server on the config's control socket, prints
/// its answer (`--json`: the answer's data), exits with its code.
fn ctl(config: Option<PathBuf>, json: bool, args: &[String]) -> ExitCode {
    use ragnarok::control::{self, CtlError};
    let run = || -> Result<(String, serde_json::Value), CtlError> {
        let request = control::request_of(args)?;
        // config.json here, else the package's.
        let path = config.unwrap_or_else(|| {
            let here = PathBuf::from("config.json");
            if here.exists() { here } else { PathBuf::from("/etc/ragnarok/config.json") }
        });
        let config = Config::load(&path).map_err(|e| match &e {
            ConfigError::Read { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                CtlError::NoPermission(e.to_string())
            }
            _ => CtlError::Usage(e.to_string()),
        })?;
        let socket = config.control_socket.ok_or_else(|| {
            CtlError::Usage(format!("{}: \"control_socket\" is off (\"\")", path.display()))
        })?;
        control::ask(&socket, &request)
    };
    match run() {
        Ok((text, data)) => {
            say(&if json { data.to_string() } else { text });
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json && matches!(e, CtlError::Refused(_)) {
                say(&serde_json::json!({ "error": e.message() }).to_string());
            }
            eprintln!("ragnarok ctl: {}", e.message());
            if matches!(e, CtlError::Usage(_)) {
                eprintln!("Try 'ragnarok ctl --help'.");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hash-password") {
        return hash_password(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("ctl") {
        return match parse_args(args.into_iter()) {
            Ok(Command::Ctl { config, json, args }) => ctl(config, json, &args),
            Ok(_) => {
                say(ragnarok::control::USAGE);
                ExitCode::SUCCESS
            }
            Err(fatal) => {
                eprintln!("ragnarok: {fatal}");
                ExitCode::from(fatal.exit_code())
            }
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("ragnarok: {fatal}");
            ExitCode::from(fatal.exit_code())
        }
    }
}

/// `ragnarok hash-password`: reads one line from stdin (its line end taken
/// off, as the login takes it off the password frame) and prints its
/// Argon2id PHC string, for an admin in the config's `admins`. On a
/// terminal it asks, and what is typed is not shown. The password is never
/// printed or logged.
fn hash_password(args: &[String]) -> ExitCode {
    if let Some(arg) = args.first() {
        let fatal = match arg.as_str() {
            "-h" | "--help" => {
                say(HASH_PASSWORD_USAGE);
                return ExitCode::SUCCESS;
            }
            _ => Fatal::Usage(format!("hash-password takes no arguments, not {arg:?}")),
        };
        eprintln!("ragnarok: {fatal}");
        return ExitCode::from(fatal.exit_code());
    }
    let mut line = String::new();
    let read = {
        let _quiet = Unechoed::on_terminal("Password (not shown): ");
        io::stdin().read_line(&mut line)
    };
    if let Err(e) = read {
        eprintln!("ragnarok: cannot read the password from stdin: {e}");
        return ExitCode::from(66);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("ragnarok: no password on stdin (one line: the password)");
        return ExitCode::from(64);
    }
    if password.chars().count() < 12 {
        eprintln!("ragnarok: warning: a short password; 12 characters or more are better");
    }
    match ragnarok::admins::hash_password(password) {
        Ok(hash) => {
            say(&hash);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ragnarok: cannot hash the password: {e}");
            ExitCode::from(70)
        }
    }
}

const HASH_PASSWORD_USAGE: &str = "\
Usage: ragnarok hash-password < FILE     (or type it: it is not shown)

Reads a password (one line; its line end is not part of it) and prints its
Argon2id hash, for the config's \"admins\":

    \"admins\": {\"alice\": \"$argon2id$v=19$m=8192,t=2,p=1$...\"}

A moderator logs in with their own password instead of the room's.";

/// Stdin's echo off while a terminal is read from (and a prompt on stderr);
/// on again when dropped. Nothing on a pipe.
struct Unechoed(Option<libc::termios>);

impl Unechoed {
    fn on_terminal(prompt: &str) -> Unechoed {
        // SAFETY: isatty, tcgetattr and tcsetattr read and write the
        // termios of fd 0 through a pointer to a local, initialised struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return Unechoed(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return Unechoed(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            eprint!("{prompt}");
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return Unechoed(None);
            }
            Unechoed(Some(saved))
        }
    }
}

impl Drop for Unechoed {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: as above, the termios saved before.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

fn run() -> Result<(), Fatal> {
    let (path, check_only) = match parse_args(std::env::args().skip(1))? {
        Command::Help => {
            say(USAGE);
            return Ok(());
        }
        Command::Version => {
            say(&format!("ragnarok {}", env!("CARGO_PKG_VERSION")));
            return Ok(());
        }
        Command::Serve { config, check_only } => (config, check_only),
        Command::Ctl { .. } => unreachable!("main handles ctl"),
    };
    let config = Config::load(&path).map_err(|e| match &e {
        ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            Fatal::NoPermission(e.to_string())
        }
        _ => Fatal::Config(e.to_string()),
    })?;
    let tls = match &config.tls {
        Some(files) => Some(tls::load(files).map_err(|e| {
            if e.is_permission_denied() {
                Fatal::NoPermission(e.to_string())
            } else {
                Fatal::Config(e.to_string())
            }
        })?),
        None => None,
    };
    if check_only {
        check_addresses(&config)?;
        // Redis as a real start reaches it: the same line and exit code
        // for a wrong password, an unknown host or no Redis at all.
        if let Some(cluster) = &config.cluster {
            reach_redis(cluster)?;
        }
        say(&format!("{}: OK", path.display()));
        return Ok(());
    }
    // The logger passes every level; what is logged is `log`'s max level,
    // which a reload can change (`Config::log_filter`: RUST_LOG overrides
    // `log_level`, and then the logger keeps to it too).
    let logger = simple_logger::SimpleLogger::new().with_level(log::LevelFilter::Trace).env();
    // Under systemd (JOURNAL_STREAM set) journald stamps every line itself,
    // and takes its priority from a `<N>` prefix (so that `journalctl -p
    // warning` shows the WARN lines: docs/DEPLOY.md).
    let started = match std::env::var_os("JOURNAL_STREAM") {
        Some(_) => {
            log::set_max_level(logger.max_level());
            log::set_boxed_logger(Box::new(Journal(logger)))
        }
        None => logger.with_utc_timestamps().init(),
    };
    started.map_err(|e| Fatal::Software(format!("cannot start logging: {e}")))?;
    log::set_max_level(config.log_filter());
    raise_fd_limit(config.limits.max_connections);

    let address = format!("{}:{}", config.server_ip, config.server_port);
    let mut server = Server::bind(&config, tls).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => {
            Fatal::NoPermission(format!("cannot listen on {address}: {e}"))
        }
        _ => Fatal::Unavailable(format!("cannot listen on {address}: {e}")),
    })?;
    server.set_config_path(path);
    if config.cluster.is_none() {
        server.load_rules().map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => Fatal::NoPermission(e.to_string()),
            _ => Fatal::Config(e.to_string()),
        })?;
    }
    if let Some(cluster) = &config.cluster {
        let (addr, tls) = reach_redis(cluster)?;
        // The history a joiner may be sent: as the room keeps it (history.rs).
        let history = server.history_limits();
        server.join_cluster(Cluster::new(cluster, addr, tls, history, Instant::now()));
        info!("cluster {:?} through {}", cluster.name, cluster.redis);
    }
    server.handle_signals().map_err(|e| Fatal::Software(format!("cannot handle signals: {e}")))?;
    let access = if config.server_password.is_empty() { "public" } else { "password protected" };
    // Open before the line that says the server listens (tests and scripts
    // wait for it), named after it.
    let control = server.open_control(&config);
    info!("Ragnarok listening on {} (room {:?}, {access})", server.url(), config.server_name);
    if let Some(path) = control {
        info!("control socket for `ragnarok ctl` at {}", path.display());
    }
    server.run().map_err(|e| Fatal::Software(format!("event loop failed: {e}")))
}

/// The one wait for Redis, at start and on `--check-config`: resolve,
/// connect, TLS, AUTH, SELECT, PING. A node that cannot reach it at start is
/// misconfigured more often than unlucky.
fn reach_redis(
    cluster: &ClusterConfig,
) -> Result<(SocketAddr, Option<Arc<rustls::ClientConfig>>), Fatal> {
    let tls = match cluster.redis.tls {
        true => Some(
            redis::conn::tls_config(cluster.redis_ca_file.as_deref())
                .map_err(|e| Fatal::Config(format!("config: \"redis_ca_file\": {e}")))?,
        ),
        false => None,
    };
    let addr = redis::conn::check(&cluster.redis, tls.clone(), Duration::from_secs(5))
        .map_err(Fatal::Unavailable)?;
    Ok((addr, tls))
}

/// Prints a line on stdout; a closed pipe (`--help | head -1`) is no error.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(io::stdout(), "{text}");
}

/// `--check-config`: the addresses to listen on must resolve to addresses of
/// this machine (whether the ports are free is not checked: the running
/// service may hold them).
fn check_addresses(config: &Config) -> Result<(), Fatal> {
    let mut addresses = vec![("server_ip", config.server_ip.clone())];
    if let Some(metrics) = &config.metrics_addr {
        addresses.push(("metrics_addr", metrics.clone()));
    }
    for (key, value) in addresses {
        let resolved = match key {
            "server_ip" => (value.as_str(), 0).to_socket_addrs(),
            _ => value.to_socket_addrs(),
        };
        let addr = resolved
            .map_err(|e| Fatal::Config(format!("config: {key:?} {value:?} does not resolve: {e}")))?
            .next()
            .ok_or_else(|| {
                Fatal::Config(format!("config: {key:?} {value:?} resolves to nothing"))
            })?;
        std::net::TcpListener::bind((addr.ip(), 0)).map_err(|e| {
            Fatal::Config(format!(
                "config: {key:?} {value:?} is not an address of this machine ({}): {e}",
                addr.ip()
            ))
        })?;
    }
    Ok(())
}

/// Lets the process hold `max_connections` sockets (plus a few files).
fn raise_fd_limit(max_connections: usize) {
    let wanted = max_connections as u64 + 64;
    let limit = ragnarok::fdlimit::raise(wanted);
    if limit < wanted {
        warn!(
            "open file limit is {limit}: fewer than max_connections ({max_connections}) can connect"
        );
    }
}

/// Lines for journald: each with its syslog priority as a `<N>` prefix,
/// which journald takes off and keeps as the line's PRIORITY; the rest as
/// `simple_logger` writes it without timestamps (`WARN  [target] message`).
struct Journal(simple_logger::SimpleLogger);

impl log::Log for Journal {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = journal_line(record.level(), record.target(), record.args());
            // One write per line; a closed stderr is not worth dying for.
            let _ = std::io::Write::write_all(&mut io::stderr().lock(), line.as_bytes());
        }
    }

    fn flush(&self) {}
}

fn journal_line(level: log::Level, target: &str, message: &std::fmt::Arguments) -> String {
    let priority = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    format!("<{priority}>{:<5} [{target}] {message}\n", level.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_their_priority() {
        let line = journal_line(
            log::Level::Warn,
            "ragnarok::peerlog",
            &format_args!("abuse from 203.0.113.7: flood"),
        );
        assert_eq!(line, "<4>WARN  [ragnarok::peerlog] abuse from 203.0.113.7: flood\n");
        let info = journal_line(log::Level::Info, "ragnarok", &format_args!("hi"));
        assert!(info.starts_with("<6>INFO  [ragnarok] "), "{info}");
    }
}
