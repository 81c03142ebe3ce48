//! A client whose last message and end of stream arrive in one TCP segment
//! (TCP_CORK, then shutdown) is seen to leave at once, and its message is
//! delivered.

use ragnarok_testkit::*;
use serde_json::json;
use std::io::Write;
use std::os::fd::AsRawFd;

fn cork(stream: &Stream, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: setsockopt reads an int from a live socket's descriptor.
    let rc = unsafe {
        libc::setsockopt(
            stream.tcp().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn last_message_and_fin_in_one_segment() {
    for server in TestServer::both(json!({})) {
        let (mut alice, bob) = server.login_two("alice", "bob");
        let mut stream = bob.ws.into_inner();
        cork(&stream, true);
        let text = json!({"msgType": "Broadcast", "text": "bye"}).to_string();
        stream.write_all(&masked_frame(0x1, text.as_bytes())).unwrap();
        stream.flush().unwrap();
        stream.tcp().shutdown(std::net::Shutdown::Write).unwrap();
        let got = alice.recv_json();
        assert_eq!((got["SrcUser"].as_str(), got["text"].as_str()), (Some("bob"), Some("bye")));
        // The leave is announced at once, not at the next ping or shutdown.
        let users = alice.recv_type("OnlineUsers");
        assert_eq!(users["Users"], json!(["alice"]));
        server.wait_log("\"bob\" left");
        drop(stream);
    }
}
