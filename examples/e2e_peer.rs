//! A non-browser client of the documented e2e2 scheme ("rusty" in the browser
//! test): it logs in, publishes its keys, learns its name from their relay,
//! reads encrypted private messages and answers "echo: <text>" encrypted,
//! saying all it does as JSON lines on stdout.
//!
//! Usage: e2e_peer URL PASSWORD NAME [CA_CERT_PEM]
//!
//! With `RAGNAROK_PEER_IDENTITY=FILE` the identity key is kept in FILE (its
//! private scalar in hex, made on first use): a restart with the same file
//! is a new session of the same identity, as a page reloaded in the same
//! browser; without it, every run is a new identity.
//!
//! Lines on stdout, one JSON object each:
//! - `{"ready": NAME, "fingerprint": FP, "key": KEY}`: its own key came back
//!   (NAME as the server has it); from now on it reads and answers;
//! - `{"peer": USER, "event": "first"|"known"|"changed"|"unusable",
//!   "fingerprint": FP, "safety_number": SN}` for each key it learns
//!   (fingerprint and safety number absent for an unusable key);
//! - `{"from": USER, "ciphertext": TEXT, "plaintext": TEXT, "counter": N,
//!   "missed": N}` for a message read, then its answer is sent, unless the
//!   sender's key changed: `{"not_answered": USER, "why": "..."}`;
//! - `{"from": USER, "ciphertext": TEXT, "refused": "could not be
//!   decrypted"|"replayed"}` for a message not read;
//! - `{"left": USER}` (a `UsersLeft`, or a whole `OnlineUsers` list without
//!   a user whose key it had).
//!
//! In an encrypted room (the welcome has `"e2e_room": true`) it also reads
//! the room's messages and answers each one that does not start with
//! "echo:" with a room message "echo: <text>":
//! - `{"room_key": USER, "epoch": E}`: a key message taken (USER's sender
//!   key for epoch E); `{"room_key_refused": USER, "why": "..."}` if not;
//! - `{"room_from": USER, "plaintext": TEXT, "epoch": E, "index": I}` for a
//!   room message read (its own, relayed back, are not printed);
//! - `{"room_refused": USER, "why": "could not be decrypted"|"no key"|
//!   "forged: the signature does not match"|"replayed"|"too far ahead"}`
//!   for one not read (history from before it joined is "no key"; a live
//!   one without a key is held 5 s for its key message first);
//! - `{"room_sent": TEXT, "epoch": E, "index": I, "key_messages": N}` after
//!   sending one (N key messages first: a new epoch), or
//!   `{"room_not_sent": TEXT, "why": "..."}` (a changed key not confirmed).

use ragnarok_testkit::e2e;
use ragnarok_testkit::e2e_room::Event;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::Message;

/// How long a live room message waits for its key message.
const HOLD: Duration = Duration::from_secs(5);

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, password, name, rest @ ..] = &args[..] else {
        eprintln!("usage: e2e_peer URL PASSWORD NAME [CA_CERT_PEM]");
        std::process::exit(64);
    };
    let identity = match std::env::var_os("RAGNAROK_PEER_IDENTITY") {
        Some(path) => kept_identity(std::path::Path::new(&path)),
        None => e2e::KeyPair::generate(),
    };
    let mut me = e2e::Client::new(e2e::Keys::with_identity(identity));

    let hostport = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let tcp = TcpStream::connect(hostport.replace("localhost", "127.0.0.1")).unwrap();
    let socket = tcp.try_clone().unwrap();
    let stream: Box<dyn Stream> = match rest.first() {
        None => Box::new(tcp),
        Some(ca) => {
            use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let conn = rustls::ClientConnection::new(
                Arc::new(config),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let (mut ws, _) = tungstenite::client::client(url.as_str(), stream).unwrap();
    // Reads wake up every second to give up room messages held too long.
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    ws.send(Message::text(password.as_str())).unwrap();
    ws.send(Message::text(name.as_str())).unwrap();
    ws.send(Message::text(json!({"msgType": "PublicKey", "key": me.published()}).to_string()))
        .unwrap();
    let mut ready = false;
    loop {
        let events = match ws.read() {
            Ok(Message::Text(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(m) => me.take(&m),
                Err(_) => continue,
            },
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                me.expire_held(HOLD)
            }
            // The server closed: nothing more to do.
            Err(_) => return,
        };
        for event in events {
            let mut send = |m: Value| ws.send(Message::text(m.to_string())).is_ok();
            if !answer(&mut me, &mut ready, event, &mut send) {
                return;
            }
        }
    }
}

/// Says what `event` meant on stdout and answers it through `send`; false
/// once sending failed.
fn answer(
    me: &mut e2e::Client,
    ready: &mut bool,
    event: Event,
    send: &mut impl FnMut(Value) -> bool,
) -> bool {
    match event {
        Event::Key { user, event } => {
            let was_ready = *ready;
            *ready |= event == e2e::KeyEvent::Mine;
            say(me, &user, event, was_ready);
        }
        Event::Left(user) => println!("{}", json!({"left": user})),
        Event::Private { from, text, read: Ok(opened) } => {
            println!(
                "{}",
                json!({"from": from, "ciphertext": text, "plaintext": opened.text,
                       "counter": opened.counter, "missed": opened.missed})
            );
            match me.seal(&from, &format!("echo: {}", opened.text)) {
                Ok(reply) => {
                    return send(json!({"msgType": "PrivateMessage", "TgtUser": from,
                                       "text": reply}));
                }
                Err(why) => {
                    println!("{}", json!({"not_answered": from, "why": format!("{why:?}")}))
                }
            }
        }
        Event::Private { from, text, read: Err(why) } => {
            println!("{}", json!({"from": from, "ciphertext": text, "refused": why.shown()}))
        }
        Event::RoomKey { from, read: Ok(epoch) } => {
            println!("{}", json!({"room_key": from, "epoch": epoch}))
        }
        Event::RoomKey { from, read: Err(why) } => {
            println!("{}", json!({"room_key_refused": from, "why": why.shown()}))
        }
        Event::Room { read: Ok(opened), .. } if opened.mine => {}
        Event::Room { from, read: Ok(opened), .. } => {
            println!(
                "{}",
                json!({"room_from": from, "plaintext": opened.text,
                       "epoch": opened.epoch, "index": opened.index})
            );
            if !opened.text.starts_with("echo:") {
                let text = format!("echo: {}", opened.text);
                match me.seal_room(&text) {
                    Ok(sealed) => {
                        if !sealed.messages().into_iter().all(&mut *send) {
                            return false;
                        }
                        println!(
                            "{}",
                            json!({"room_sent": text, "epoch": sealed.epoch,
                                   "index": sealed.index,
                                   "key_messages": sealed.key_messages.len()})
                        );
                    }
                    Err(why) => {
                        println!("{}", json!({"room_not_sent": text, "why": format!("{why:?}")}))
                    }
                }
            }
        }
        Event::Room { from, read: Err(why), .. } => {
            println!("{}", json!({"room_refused": from, "why": why.shown()}))
        }
        Event::Welcome { .. } | Event::Broadcast { .. } => {}
    }
    true
}

/// One stdout line for a key learned (its own key only the first time: a
/// joiner's snapshot may hold it as well as its live relay).
fn say(me: &e2e::Client, user: &str, event: e2e::KeyEvent, was_ready: bool) {
    let line = match event {
        e2e::KeyEvent::Mine if was_ready => return,
        e2e::KeyEvent::Mine => json!({
            "ready": user,
            "fingerprint": e2e::fingerprint(me.keys().identity.public()),
            "key": me.published(),
        }),
        e2e::KeyEvent::Unusable(why) => {
            json!({"peer": user, "event": "unusable", "why": format!("{why:?}")})
        }
        other => json!({
            "peer": user,
            "event": match other {
                e2e::KeyEvent::First => "first",
                e2e::KeyEvent::Known => "known",
                _ => "changed",
            },
            "fingerprint": me.fingerprint(user),
            "safety_number": me.safety_number(user),
        }),
    };
    println!("{line}");
}

/// The identity key kept in `path` (hex of the private scalar), made and
/// written there if the file does not exist yet.
fn kept_identity(path: &std::path::Path) -> e2e::KeyPair {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim();
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        return bytes
            .and_then(|b| e2e::KeyPair::from_secret_bytes(&b))
            .unwrap_or_else(|| panic!("{}: not an identity key", path.display()));
    }
    let identity = e2e::KeyPair::generate();
    let hex: String = identity.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, hex).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    identity
}
