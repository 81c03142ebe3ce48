//! Arbitrary UTF-8 into `protocol::parse_request`, the reader of every text
//! frame a logged-in client sends.
//!
//! Checks: no panic; a parsed request survives being serialized the way the
//! server (for `Broadcast` and `PublicKey`, via `Reply`) or a client (for
//! `PrivateMessage`) writes it and parsed again, and survives the input's
//! JSON being re-serialized; a rejection serializes to an `Error` reply that
//! carries its code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ragnarok::protocol::{Reply, Request, parse_request};
use serde_json::{Value, json};

fuzz_target!(|frame: &str| {
    match parse_request(frame) {
        Ok(request) => {
            round_trip(&request);
            // The same JSON written by another serializer parses the same
            // (skipped when serde_json's Value refuses what the parser skipped,
            // e.g. a huge number in an ignored field).
            if let Ok(value) = serde_json::from_str::<Value>(frame) {
                assert_eq!(parse_request(&value.to_string()).as_ref(), Ok(&request));
            }
        }
        Err(rejection) => {
            let value: Value = serde_json::from_str(&rejection.to_json()).expect("Error is JSON");
            assert_eq!(value["msgType"], "Error");
            assert_eq!(value["code"], rejection.code.as_str());
            assert_eq!(value["text"], rejection.text.as_str());
        }
    }
});

fn round_trip(request: &Request) {
    let again = |json: String| parse_request(&json).unwrap_or_else(|e| panic!("{json}: {e:?}"));
    match request {
        Request::Broadcast { text } => {
            for history in [false, true] {
                let json = Reply::Broadcast { source: "fuzz", text, history }.to_json();
                assert_eq!(&again(json), request);
            }
        }
        Request::PublicKey { key } => {
            let json = Reply::PublicKey { source: "fuzz", key }.to_json();
            assert_eq!(&again(json), request);
        }
        Request::PrivateMessage { target, text } => {
            let json = json!({"msgType": "PrivateMessage", "TgtUser": target, "text": text});
            assert_eq!(&again(json.to_string()), request);
        }
        Request::OnlineUsers => {
            let json = json!({"msgType": "OnlineUsers"});
            assert_eq!(&again(json.to_string()), request);
        }
        // The whole object, for `Action::of_json`: as it was sent.
        Request::Moderate(fields) => {
            assert_eq!(fields["msgType"], "Moderate");
            assert_eq!(&again(fields.to_string()), request);
        }
    }
}
