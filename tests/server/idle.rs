//! After `idle_timeout_secs` of silence the server pings; a client that
//! answers stays, one that does not is disconnected.

use ragnarok_testkit::*;
use serde_json::json;
use std::thread::sleep;
use std::time::Duration;
use tungstenite::Message;

#[test]
fn silent_clients_are_pinged_and_dead_ones_dropped() {
    let _quiet = quiet(); // a 1-s idle timeout seen within 4 s
    for server in TestServer::both(json!({"idle_timeout_secs": 1})) {
        let mut alive = server.login("alive");
        let mut dead = server.login("dead");
        alive.recv_type("OnlineUsers");
        // `alive` reads (tungstenite answers pings); `dead` reads nothing.
        let mut pinged = false;
        for _ in 0..40 {
            alive.ws.get_mut().tcp().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            match alive.ws.read() {
                Ok(Message::Ping(_)) => pinged = true,
                Ok(Message::Text(t)) if t.contains("OnlineUsers") => {
                    assert!(t.contains("[\"alive\"]"), "{t}");
                    break;
                }
                Ok(other) => panic!("{other:?}"),
                Err(_) => {
                    let _ = alive.ws.flush();
                }
            }
        }
        assert!(pinged, "the server pinged");
        alive.ws.get_mut().tcp().set_read_timeout(Some(TIMEOUT)).unwrap();
        server.wait_log("no answer to ping");

        sleep(Duration::from_millis(200));
        alive.send_json(broadcast("still here"));
        assert_eq!(alive.recv_json()["text"], "still here");
        let (_, ending) = dead.recv_until_end();
        assert_eq!(ending.code(), Some(1001));
    }
}
