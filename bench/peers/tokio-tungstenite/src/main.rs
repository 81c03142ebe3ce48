//! Benchmark peer: the Ragnarok protocol on a single-threaded tokio runtime
//! with tokio-tungstenite (default 128 KiB buffers), as a typical Rust chat
//! server would be written. OnlineUsers goes to everyone on join and leave.
//! Usage: peer-tokio-tungstenite PORT [PASSWORD] [CERT KEY]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Users = Rc<RefCell<BTreeMap<String, UnboundedSender<Utf8Bytes>>>>;

fn everyone(users: &Users, text: Utf8Bytes) {
    for tx in users.borrow().values() {
        let _ = tx.send(text.clone());
    }
}

fn list(users: &Users) -> Utf8Bytes {
    let names: Vec<String> = users.borrow().keys().cloned().collect();
    json!({"msgType": "OnlineUsers", "Users": names}).to_string().into()
}

async fn session<S: AsyncRead + AsyncWrite + Unpin + 'static>(stream: S, users: Users, password: Rc<String>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut sink, mut source) = ws.split();
    let strip = |s: &str| s.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(s).to_owned();
    let next_text = async |source: &mut futures_util::stream::SplitStream<_>| loop {
        match source.next().await {
            Some(Ok(Message::Text(t))) => return Some(t),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    };
    let Some(pw) = next_text(&mut source).await else { return };
    if !password.is_empty() && strip(&pw) != *password {
        return;
    }
    let Some(name) = next_text(&mut source).await else { return };
    let name = strip(&name);
    if name.is_empty() || users.borrow().contains_key(&name) {
        return;
    }
    let (tx, mut rx) = unbounded_channel::<Utf8Bytes>();
    let _ = tx.send(json!({"ServerName": "tokio-tungstenite"}).to_string().into());
    users.borrow_mut().insert(name.clone(), tx);
    everyone(&users, list(&users));
    let writer = tokio::task::spawn_local(async move {
        while let Some(text) = rx.recv().await {
            if sink.feed(Message::Text(text)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(text) = next_text(&mut source).await {
        let Ok(m) = serde_json::from_str::<Value>(&text) else { continue };
        let body = m["text"].as_str().unwrap_or("");
        match m["msgType"].as_str() {
            Some("Broadcast") => {
                let out = json!({"msgType": "Broadcast", "SrcUser": name, "text": body}).to_string();
                everyone(&users, out.into());
            }
            Some("PrivateMessage") => {
                let target = m["TgtUser"].as_str().unwrap_or("");
                let out = json!({"msgType": "PrivateMessage", "SrcUser": name, "text": body}).to_string();
                if let Some(tx) = users.borrow().get(target) {
                    let _ = tx.send(out.into());
                }
            }
            _ => {}
        }
    }
    users.borrow_mut().remove(&name);
    writer.abort();
    everyone(&users, list(&users));
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = args.get(1).map(String::as_str).unwrap_or("12345");
    let password = Rc::new(args.get(2).cloned().unwrap_or_default());
    let tls = args.get(3).zip(args.get(4)).map(|(cert, key)| {
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).await.unwrap();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    eprintln!("tokio-tungstenite peer listening on {scheme}://127.0.0.1:{port}");
    let users: Users = Rc::default();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let (users, password, tls) = (users.clone(), password.clone(), tls.clone());
                tokio::task::spawn_local(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                session(stream, users, password).await;
                            }
                        }
                        None => session(stream, users, password).await,
                    }
                });
            }
        })
        .await;
}
