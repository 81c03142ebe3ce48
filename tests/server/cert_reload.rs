//! SIGHUP reloads the TLS certificate and key: new connections get the new
//! pair, existing ones chat on; a bad new pair is logged, naming the file,
//! and the old one stays in use.

use ragnarok_testkit::*;
use serde_json::json;

#[test]
fn sighup_swaps_the_certificate_without_dropping_anyone() {
    let mut server = TestServer::start_tls(json!({"history_size": 0}));
    let (mut alice, mut bob) = server.login_two("alice", "bob");

    let renewed = TestCert::new();
    std::fs::write(server.dir.join("cert.pem"), &renewed.cert_pem).unwrap();
    std::fs::write(server.dir.join("key.pem"), &renewed.key_pem).unwrap();
    server.signal("HUP");
    server.wait_log("SIGHUP: reloaded the certificate");

    // A client that trusts only the new certificate gets in...
    server.trust(&renewed.der);
    let mut carol = server.login("carol");
    // ...and the connections made before chat on.
    alice.send_json(broadcast("still here"));
    assert_eq!(bob.recv_type("Broadcast")["text"], "still here");
    assert_eq!(carol.recv_type("Broadcast")["text"], "still here");

    // A broken key: logged with the file's name, the renewed pair kept.
    std::fs::write(server.dir.join("key.pem"), "not a key").unwrap();
    server.signal("HUP");
    let line = server.wait_log("SIGHUP: kept the old certificate");
    assert!(line.contains("key.pem") && line.contains("ERROR"), "{line}");
    // A key that does not match the certificate: one line naming both files.
    std::fs::write(server.dir.join("key.pem"), TestCert::new().key_pem).unwrap();
    server.signal("HUP");
    let line = server.wait_log(&format!(
        "the key in {} does not match the certificate in {}",
        server.dir.join("key.pem").display(),
        server.dir.join("cert.pem").display()
    ));
    assert!(line.contains("SIGHUP: kept the old certificate"), "{line}");
    let mut dave = server.login("dave");
    dave.send_json(broadcast("after the bad reload"));
    assert_eq!(dave.recv_type("Broadcast")["text"], "after the bad reload");
    assert!(server.is_running());
}
