//! `GET /` serves the embedded chat page on the WebSocket's own port and
//! scheme; other paths are 404; an upgrade on any path still works.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::{Read, Write};

fn get(server: &TestServer, request: &str) -> String {
    let mut stream = server.stream();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn page_is_served_over_http_and_https() {
    for server in TestServer::both(json!({})) {
        let page = get(&server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page:.200}");
        assert!(page.contains("Content-Type: text/html"));
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
        assert_eq!(body.len(), length);
        assert!(body.contains("<title>Ragnarok</title>"));
        assert!(
            head.contains("Content-Security-Policy: default-src 'none'; script-src 'self';"),
            "{head}"
        );

        // The script and styles come from the same server, and nothing else
        // from anywhere: every reference is a path here or inline data.
        let script = get(&server, "GET /app.js HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(
            script.starts_with("HTTP/1.1 200 OK\r\n")
                && script.contains("Content-Type: text/javascript")
        );
        assert!(script.contains("e2e2:"));
        let style = get(&server, "GET /app.css HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(
            style.starts_with("HTTP/1.1 200 OK\r\n") && style.contains("Content-Type: text/css")
        );
        for file in [body, &script, &style] {
            for reference in ["src=\"", "href=\"", "url("] {
                for (at, _) in file.match_indices(reference) {
                    let target = file[at + reference.len()..].trim_start_matches('"');
                    assert!(
                        target.starts_with("/app.") || target.starts_with("data:"),
                        "no external requests: {:.60}",
                        &file[at..]
                    );
                }
            }
            for external in ["@import", "fetch(", "XMLHttpRequest"] {
                assert!(!file.contains(external), "no external requests: {external}");
            }
        }

        let missing = get(&server, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let head = get(&server, "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");
    }
}

#[test]
fn upgrade_on_any_path_still_works() {
    let server = TestServer::start(json!({}));
    let url = format!("ws://localhost:{}/some/room?x=1", server.addr.port());
    let (mut ws, _) = tungstenite::client::client(url, server.stream()).unwrap();
    ws.send(tungstenite::Message::text(PASSWORD)).unwrap();
    ws.send(tungstenite::Message::text("pathfinder")).unwrap();
    let first = ws.read().unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), r#"{"ServerName":"Test Room"}"#);
}
