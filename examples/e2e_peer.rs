//! A non-browser client of the documented end-to-end scheme, used by the
//! browser test to prove interoperability: it logs in, publishes a key,
//! waits for an encrypted private message, prints its plaintext as a JSON
//! line on stdout, and answers "echo: <plaintext>" encrypted.
//!
//! Usage: e2e_peer URL PASSWORD NAME [CA_CERT_PEM]

use ragnarok_testkit::e2e;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use serde_json::{Value, json};
use tungstenite::Message;

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, password, name, rest @ ..] = &args[..] else {
        eprintln!("usage: e2e_peer URL PASSWORD NAME [CA_CERT_PEM]");
        std::process::exit(64);
    };
    let hostport = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let tcp = TcpStream::connect(hostport.replace("localhost", "127.0.0.1")).unwrap();
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
    ws.send(Message::text(password.as_str())).unwrap();
    ws.send(Message::text(name.as_str())).unwrap();
    let mut keys = Some(e2e::KeyPair::generate());
    ws.send(Message::text(
        json!({"msgType": "PublicKey", "key": keys.as_ref().unwrap().public_b64()}).to_string(),
    ))
    .unwrap();
    println!("{}", json!({"ready": name}));
    let mut peer_keys = std::collections::HashMap::new();
    loop {
        let Ok(Message::Text(text)) = ws.read() else { continue };
        let m: Value = serde_json::from_str(&text).unwrap();
        match m["msgType"].as_str() {
            Some("PublicKey") => {
                peer_keys.insert(
                    m["SrcUser"].as_str().unwrap().to_owned(),
                    m["key"].as_str().unwrap().to_owned(),
                );
            }
            Some("PublicKeys") => {
                for (user, key) in m["Keys"].as_object().unwrap() {
                    peer_keys.insert(user.clone(), key.as_str().unwrap().to_owned());
                }
            }
            Some("PrivateMessage") => {
                let from = m["SrcUser"].as_str().unwrap();
                let session = keys.take().expect("one conversation").agree(&peer_keys[from]);
                let ciphertext = m["text"].as_str().unwrap();
                let plain = session.open(from, name, ciphertext).expect("decrypts");
                println!("{}", json!({"from": from, "ciphertext": ciphertext, "plaintext": plain}));
                let reply = session.seal(name, from, &format!("echo: {plain}"));
                ws.send(Message::text(
                    json!({"msgType": "PrivateMessage", "TgtUser": from, "text": reply})
                        .to_string(),
                ))
                .unwrap();
                ws.flush().unwrap();
                // Stay until the test ends us, so the reply is not cut off.
            }
            _ => {}
        }
    }
}
