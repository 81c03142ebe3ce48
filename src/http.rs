//! The HTTP/1.1 request that opens every connection: a WebSocket upgrade on
//! any path (answered with 101), or a plain request: `GET /` serves the chat
//! page embedded in the binary (with its `/app.js` and `/app.css`), anything
//! else an HTTP error; then close.

use std::net::IpAddr;

use tungstenite::handshake::derive_accept_key;

use crate::addresses::Cidr;

/// The browser client, compiled into the binary.
const PAGE: &str = include_str!("web/index.html");

/// Largest request head we accept.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// Header lines in a request: browsers behind proxies send 30 to 50.
const MAX_HEADERS: usize = 100;

/// What the operator allows at the HTTP level.
#[derive(Debug, Default, Clone)]
pub struct HttpPolicy {
    /// Origins whose pages may open a WebSocket; empty = any. A request
    /// without `Origin` (not from a browser) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `max_message_bytes`, told to the page (it refuses to send more).
    pub max_message_bytes: usize,
    /// `e2e_room`, told to the page (it says which kind of room it is).
    pub e2e_room: bool,
    /// `rate_limit_per_sec` and `rate_limit_burst`, told to the page (it
    /// paces a burst of key messages to pass).
    pub rate_limit: (u32, u32),
    /// `server_name`, told to the page before login (its login screen
    /// names the room).
    pub room_name: String,
}

impl HttpPolicy {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// Send `response`, then speak WebSocket; bytes after `head_len` are
    /// already WebSocket frames. `client`: the address a trusted proxy
    /// named (only when the request came from one).
    Upgrade { response: Vec<u8>, head_len: usize, client: Option<IpAddr> },
    /// Send `response`, then close.
    Respond { response: Vec<u8>, status: u16 },
}

/// Parses the request in `buf`; `from_proxy`: it came from a trusted proxy.
pub fn parse(buf: &[u8], policy: &HttpPolicy, from_proxy: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => {
            return Parsed::Incomplete;
        }
        Ok(httparse::Status::Partial) => return reject(431, "request head too large\n"),
        Err(_) => return reject(400, "malformed HTTP request\n"),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let method = req.method.unwrap_or("");
    if !has_token("Upgrade", "websocket") {
        let path = req.path.unwrap_or("/").split('?').next().unwrap_or("/");
        return match (method, path) {
            ("GET" | "HEAD", "/" | "/index.html") => page(policy, method == "HEAD"),
            ("GET" | "HEAD", "/app.js") => asset(SCRIPT, "text/javascript", method == "HEAD"),
            ("GET" | "HEAD", "/app.css") => asset(STYLE, "text/css", method == "HEAD"),
            ("GET" | "HEAD", _) => reject(404, "not found\n"),
            _ => reject(405, "only GET is supported\n"),
        };
    }
    if method != "GET" {
        return reject(405, "a WebSocket upgrade must be a GET\n");
    }
    if !has_token("Connection", "upgrade") {
        return reject(400, "WebSocket upgrade without \"Connection: Upgrade\"\n");
    }
    if let Some(origin) = header("Origin") {
        let allowed = &policy.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim())) {
            return reject(403, "this origin may not open a WebSocket here\n");
        }
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return reject(426, "unsupported WebSocket version: use 13\n");
    }
    let Some(key) = header("Sec-WebSocket-Key").map(str::trim).filter(|k| !k.is_empty()) else {
        return reject(400, "WebSocket upgrade without Sec-WebSocket-Key\n");
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let client = if from_proxy { forwarded_client(req.headers, policy) } else { None };
    Parsed::Upgrade { response: response.into_bytes(), head_len, client }
}

/// The page's script and styles, compiled into the binary and served from
/// the server's own origin so that the page's policy allows no inline code.
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// The page's Content-Security-Policy (sent with the script and styles too):
/// code and styles from this server only, no inline ones; WebSockets to any
/// host (`'self'` does not cover ws:/wss: in every browser); images only
/// from this server or `data:` (the favicon and the padlock icon);
/// `form-action 'none'` so that the login form, submitted before the script
/// has loaded, cannot put the password into a URL.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The client a trusted proxy names: walking `X-Forwarded-For` (else
/// `Forwarded`'s `for=`) from the right, the first address that is not a
/// trusted proxy itself (what a client wrote on the left is not believed).
fn forwarded_client(headers: &[httparse::Header], policy: &HttpPolicy) -> Option<IpAddr> {
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .collect()
    };
    let mut hops: Vec<IpAddr> =
        values("X-Forwarded-For").iter().filter_map(|v| parse_hop(v)).collect();
    if hops.is_empty() {
        hops = values("Forwarded")
            .iter()
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("for").then(|| parse_hop(value)).flatten()
                })
            })
            .collect();
    }
    let last = *hops.last()?;
    Some(hops.into_iter().rev().find(|ip| !policy.trusts(*ip)).unwrap_or(last))
}

/// One address of a forwarding header: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `"[2001:db8::1]:4711"`.
fn parse_hop(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next()?.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, _port) = value.rsplit_once(':')?;
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The page, told the largest message the server takes.
fn page(policy: &HttpPolicy, head_only: bool) -> Parsed {
    let limit = policy.max_message_bytes.to_string();
    let page = PAGE.replace("MAX_MESSAGE_BYTES", &limit);
    let page = page.replace("E2E_ROOM", if policy.e2e_room { "true" } else { "false" });
    let page =
        page.replace("RATE_LIMIT", &format!("{} {}", policy.rate_limit.0, policy.rate_limit.1));
    // Last: the room's name is the operator's text, and may hold the other placeholders.
    let page = page.replace("ROOM_NAME", &escape_html(&policy.room_name));
    asset(&page, "text/html", head_only)
}

/// `text` safe inside an HTML attribute value in double quotes (and in text).
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// 200 with one of the embedded files and the page's security headers.
fn asset(body: &str, content_type: &str, head_only: bool) -> Parsed {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         Content-Security-Policy: {CSP}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    Parsed::Respond { response, status: 200 }
}

/// The answer to plain HTTP sent to the TLS port (nginx sends a 400 too).
pub fn plain_http_on_tls_port() -> Vec<u8> {
    error_response(400, "This port speaks TLS: use https:// (or wss:// for the WebSocket).\n")
}

fn reject(status: u16, body: &str) -> Parsed {
    Parsed::Respond { response: error_response(status, body), status }
}

fn error_response(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let extra = if status == 426 { "Sec-WebSocket-Version: 13\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    response.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn parse(buf: &[u8]) -> Parsed {
        super::parse(buf, &HttpPolicy::default(), false)
    }

    #[test]
    fn upgrade_answers_with_the_rfc_accept_key() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80]);
        match parse(&bytes) {
            Parsed::Upgrade { response, head_len, .. } => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
                assert_eq!(head_len, UPGRADE.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_and_bad_requests() {
        assert_eq!(parse(&UPGRADE.as_bytes()[..30]), Parsed::Incomplete);
        let status = |req: &str| match parse(req.as_bytes()) {
            Parsed::Respond { status, .. } => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET /?room=1 HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("HEAD /index.html HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(status("GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(status("GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("HEAD /app.css?v=2 HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(status("GET /app.js.map HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(status("GET /web/app.css HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
        assert_eq!(status("POST /app.js HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("POST / HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("\x16\x03\x01garbage\r\n\r\n"), 400);
        assert_eq!(status(&UPGRADE.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(status(&UPGRADE.replace("Sec-WebSocket-Key", "X-Key")), 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(status(&huge), 431);
    }

    #[test]
    fn many_header_lines_pass_and_origins_are_checked() {
        let many: String = (0..60).map(|i| format!("X-Proxy-{i}: v\r\n")).collect();
        let request = UPGRADE.replace("Host: x\r\n", &format!("Host: x\r\n{many}"));
        assert!(matches!(parse(request.as_bytes()), Parsed::Upgrade { .. }));

        let policy = HttpPolicy {
            allowed_origins: vec!["https://chat.example.org".into()],
            ..HttpPolicy::default()
        };
        let with_origin = |origin: &str| {
            let request =
                UPGRADE.replace("Host: x\r\n", &format!("Host: x\r\nOrigin: {origin}\r\n"));
            match super::parse(request.as_bytes(), &policy, false) {
                Parsed::Upgrade { .. } => 101,
                Parsed::Respond { status, .. } => status,
                Parsed::Incomplete => 0,
            }
        };
        assert_eq!(with_origin("https://chat.example.org"), 101);
        assert_eq!(with_origin("https://evil.example"), 403);
        assert_eq!(with_origin("null"), 403);
        assert!(
            matches!(super::parse(UPGRADE.as_bytes(), &policy, false), Parsed::Upgrade { .. }),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let policy = HttpPolicy {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            ..HttpPolicy::default()
        };
        let client = |headers: &str, from_proxy: bool| {
            let request = UPGRADE.replace("Host: x\r\n", &format!("Host: x\r\n{headers}"));
            match super::parse(request.as_bytes(), &policy, from_proxy) {
                Parsed::Upgrade { client, .. } => client.map(|ip| ip.to_string()),
                other => panic!("{other:?}"),
            }
        };
        let xff = "X-Forwarded-For: 203.0.113.9\r\n";
        assert_eq!(client(xff, true).as_deref(), Some("203.0.113.9"));
        assert_eq!(client(xff, false), None, "only a trusted peer is believed");
        // A client's own entry on the left is not believed; trusted hops are skipped.
        let chain = "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\nX-Forwarded-For: 10.1.1.1\r\n";
        assert_eq!(client(chain, true).as_deref(), Some("198.51.100.7"));
        let fwd = "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.2\r\n";
        assert_eq!(client(fwd, true).as_deref(), Some("2001:db8:cafe::17"));
        assert_eq!(
            client("X-Forwarded-For: 192.0.2.1:5555\r\n", true).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(client("X-Forwarded-For: garbage\r\n", true), None);
        assert_eq!(client("", true), None);
    }

    fn respond(request: &str) -> (u16, String) {
        match parse(request.as_bytes()) {
            Parsed::Respond { response, status } => (status, String::from_utf8(response).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn page_script_and_styles_are_served_with_the_same_policy() {
        // The page is told the message limit (0 with the default policy).
        let page = PAGE.replace("MAX_MESSAGE_BYTES", "0").replace("E2E_ROOM", "false");
        let page = page.replace("RATE_LIMIT", "0 0").replace("ROOM_NAME", "");
        assert!(page.contains(r#"<meta name="max-message-bytes" content="0">"#));
        assert!(page.contains(r#"<meta name="room-name" content="">"#));
        assert!(page.contains(r#"<meta name="e2e-room" content="false">"#));
        let files = [
            ("/", "text/html", page.as_str()),
            ("/app.js", "text/javascript", SCRIPT),
            ("/app.css", "text/css", STYLE),
        ];
        for (path, content_type, body) in files {
            let (status, response) = respond(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(status, 200, "{path}");
            let (head, got) = response.split_once("\r\n\r\n").unwrap();
            for header in [
                format!("Content-Type: {content_type}; charset=utf-8"),
                format!("Content-Length: {}", body.len()),
                "Cache-Control: no-cache".into(),
                "X-Content-Type-Options: nosniff".into(),
                "Referrer-Policy: no-referrer".into(),
                format!("Content-Security-Policy: {CSP}"),
                "Connection: close".into(),
            ] {
                assert!(head.lines().any(|l| l == header), "{path}: no {header:?} in\n{head}");
            }
            assert_eq!(got, body, "{path}");

            let (status, response) = respond(&format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(status, 200);
            assert!(
                response.ends_with("\r\n\r\n") && !response.contains(body),
                "HEAD {path} has no body"
            );
            assert!(response.contains(&format!("Content-Length: {}\r\n", body.len())));
        }
    }

    #[test]
    fn the_policy_allows_no_inline_code_and_the_page_has_none() {
        assert!(!CSP.contains("unsafe-"), "{CSP}");
        assert!(CSP.contains("script-src 'self';") && CSP.contains("style-src 'self';"));
        assert!(PAGE.contains(r#"<script src="/app.js""#), "the script is external");
        assert!(
            PAGE.contains(r#"<link rel="stylesheet" href="/app.css">"#),
            "the styles are external"
        );
        assert_eq!(PAGE.matches("<script").count(), 1, "no inline <script>");
        for inline in ["<style", "style=", "javascript:"] {
            assert!(!PAGE.contains(inline), "inline code in the page: {inline}");
        }
        // No inline event handlers (onclick=, onsubmit=, ...).
        for (at, _) in PAGE.match_indices(" on") {
            let rest = &PAGE[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            assert!(
                rest.as_bytes().get(name_len) != Some(&b'='),
                "inline handler: {:.40}",
                &PAGE[at..]
            );
        }
        assert!(SCRIPT.contains("e2e2:") && STYLE.contains("@media"));
    }

    #[test]
    fn the_page_names_the_room_escaped() {
        let policy = HttpPolicy {
            room_name: r#"Tom & "Jerry" <script>'s RATE_LIMIT E2E_ROOM"#.into(),
            e2e_room: true,
            rate_limit: (5, 10),
            ..HttpPolicy::default()
        };
        let Parsed::Respond { response, status: 200 } =
            super::parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &policy, false)
        else {
            panic!("no page")
        };
        let page = String::from_utf8(response).unwrap();
        assert!(
            page.contains(
                r#"<meta name="room-name" content="Tom &amp; &quot;Jerry&quot; &lt;script&gt;&#39;s RATE_LIMIT E2E_ROOM">"#
            ),
            "{page}"
        );
        assert!(page.contains(r#"<meta name="rate-limit" content="5 10">"#));
        assert!(page.contains(r#"<meta name="e2e-room" content="true">"#));
        assert!(!page.contains("<script>'"), "nothing of the name unescaped");
        assert_eq!(escape_html("Ks"), "Ks");
        assert_eq!(escape_html("\u{1F512} Åsa"), "\u{1F512} Åsa");
    }
}
