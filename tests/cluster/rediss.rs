//! Cluster over `rediss://`: two nodes reach a Redis that speaks TLS only
//! (a CA and a certificate made by this test, `redis_ca_file` trusting the
//! CA, a password) and are one room: presence and a broadcast cross. A node
//! that does not trust the certificate refuses to start (exit 69) with one
//! line saying why.

use ragnarok_testkit::cluster::*;
use ragnarok_testkit::{TestServer, broadcast, ca_signed, temp_dir};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct TlsRedis(Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_nodes_are_one_room_over_rediss() {
    let dir = temp_dir("rediss");
    let certs = ca_signed(&dir);
    let [ca, cert, key] = [&certs.ca, &certs.cert, &certs.key].map(|p| p.display().to_string());
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &ca])
        .args(["--tls-auth-clients", "no", "--requirepass", "s3cret"])
        .args(["--save", "", "--appendonly", "no", "--dir", &dir.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: install it with `apt install redis-server`");
    let _redis = TlsRedis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server with TLS did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = json!({
        "redis_url": format!("rediss://:s3cret@127.0.0.1:{port}"),
        "redis_ca_file": ca,
        "cluster_name": unique_cluster_name("tls"),
    });
    let nodes = [TestServer::start(config.clone()), TestServer::start(config.clone())];
    let login = |node: &TestServer, name: &str| {
        let deadline = after(READY);
        loop {
            match try_login(node, name, deadline) {
                Ok(user) => return user,
                Err(e) if Instant::now() < deadline && e["code"] == "cluster_unavailable" => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("login of {name} over rediss: {e}; log: {:?}", node.log()),
            }
        }
    };
    let mut alice = login(&nodes[0], "alice");
    let mut bob = login(&nodes[1], "bob");
    let both = set(["alice", "bob"]);
    alice.wait_users(after(CONVERGE), &both);
    bob.wait_users(after(CONVERGE), &both);
    alice.send(broadcast("over tls"));
    bob.wait_for(after(CONVERGE), "alice's broadcast", |m| m["text"] == "over tls");

    // Without the CA the node does not trust Redis and says so at start.
    let mut untrusting = config.clone();
    untrusting.as_object_mut().unwrap().remove("redis_ca_file");
    let (status, stderr) = run_to_exit(untrusting, Duration::from_secs(15));
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("rediss://:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the password was printed: {stderr}");
}
