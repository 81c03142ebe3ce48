//! `ragnarok ctl`: the owner's commands over the control socket (a Unix
//! socket, `control_socket`). One JSON line asks, one JSON line answers:
//! `{"ok": true, "text": ..., "data": ...}` or `{"ok": false, "error": ...}`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::moderation::parse_duration;

/// Longest request the server reads (a `say` of a long text fits).
pub const MAX_REQUEST: usize = 64 * 1024;

pub const USAGE: &str = "\
Usage: ragnarok ctl [--config PATH] [--json] COMMAND

Commands:
  who                                   who is online: name, address, since when, node
  kick NAME [--for DURATION] [--reason TEXT]
                                        disconnect NAME; with --for, NAME cannot come back before it ends
  ban NAME|ADDRESS|CIDR [--for DURATION] [--reason TEXT]
                                        refuse logins of the name (and its look-alikes) or from the address
                                        or network; whoever it covers is disconnected; kept across restarts
  unban NAME|ADDRESS|CIDR               lift a ban
  bans                                  the bans in force
  mute NAME [--for DURATION]            what NAME sends reaches no one (they are told)
  unmute NAME
  lock | unlock                         refuse new logins (the users online stay) / take them again
  say TEXT                              an announcement to everyone online
  reload                                read the config file (and the certificate) again
  stats                                 a summary of the server's state

DURATION: 30s, 10m, 2h, 7d or 1w. Exit codes: 0 done, 1 refused (the answer
says why), 64 usage, 69 no server on the control socket, 77 no permission.";

/// What `ragnarok ctl` exits with (sysexits where one fits).
#[derive(Debug)]
pub enum CtlError {
    Usage(String),
    Refused(String),
    Unavailable(String),
    NoPermission(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) => 1,
            CtlError::Usage(_) => 64,
            CtlError::Unavailable(_) => 69,
            CtlError::NoPermission(_) => 77,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CtlError::Usage(m)
            | CtlError::Refused(m)
            | CtlError::Unavailable(m)
            | CtlError::NoPermission(m) => m,
        }
    }
}

/// Makes the request of `ragnarok ctl`'s arguments (after `ctl` and its
/// own options).
pub fn request_of(args: &[String]) -> Result<Value, CtlError> {
    let usage = |m: String| CtlError::Usage(m);
    let Some((command, rest)) = args.split_first() else {
        return Err(usage("which command? (ragnarok ctl --help lists them)".into()));
    };
    let mut positional = Vec::new();
    let (mut for_secs, mut reason) = (None, None);
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().ok_or_else(|| usage(format!("{flag} needs a value")));
        match arg.as_str() {
            "--for" => {
                let d = parse_duration(&value("--for")?).map_err(usage)?;
                for_secs = Some(d.as_secs());
            }
            "--reason" => reason = Some(value("--reason")?),
            _ => positional.push(arg.clone()),
        }
    }
    let takes = |n: usize, what: &str| match positional.len() == n {
        true => Ok(()),
        false => Err(usage(format!("{command} takes {what}"))),
    };
    let flags_allowed = |for_ok: bool, reason_ok: bool| {
        if (for_secs.is_some() && !for_ok) || (reason.is_some() && !reason_ok) {
            return Err(usage(format!("{command} takes no --for or --reason here")));
        }
        Ok(())
    };
    let mut request = json!({ "cmd": command });
    match command.as_str() {
        "who" | "bans" | "lock" | "unlock" | "reload" | "stats" => {
            takes(0, "no arguments")?;
            flags_allowed(false, false)?;
        }
        "kick" | "ban" => {
            takes(1, "one target")?;
            request["target"] = json!(positional[0]);
        }
        "mute" => {
            takes(1, "one name")?;
            flags_allowed(true, false)?;
            request["target"] = json!(positional[0]);
        }
        "unban" | "unmute" => {
            takes(1, "one target")?;
            flags_allowed(false, false)?;
            request["target"] = json!(positional[0]);
        }
        "say" => {
            flags_allowed(false, false)?;
            let text = positional.join(" ");
            if text.trim().is_empty() {
                return Err(usage("say takes the text to announce".into()));
            }
            request["text"] = json!(text);
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    }
    if let Some(secs) = for_secs {
        request["for_secs"] = json!(secs);
    }
    if let Some(reason) = reason {
        request["reason"] = json!(reason);
    }
    Ok(request)
}

/// Sends `request` to the server on `socket` and returns its answer's
/// `text` and `data`, or why not.
pub fn ask(socket: &Path, request: &Value) -> Result<(String, Value), CtlError> {
    let shown = socket.display();
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => CtlError::NoPermission(format!(
            "cannot open the control socket {shown}: {e} (run as the server's user or group)"
        )),
        _ => CtlError::Unavailable(format!(
            "no server answers on the control socket {shown}: {e} (is it running, with this control_socket?)"
        )),
    })?;
    let lost = |e: io::Error| CtlError::Unavailable(format!("control socket {shown}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(lost)?;
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(lost)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(lost)?;
    let answer: Value = serde_json::from_str(&answer)
        .map_err(|_| CtlError::Unavailable(format!("control socket {shown}: no answer")))?;
    match answer["ok"].as_bool() {
        Some(true) => {
            let text = answer["text"].as_str().unwrap_or_default().to_owned();
            Ok((text, answer["data"].clone()))
        }
        _ => Err(CtlError::Refused(answer["error"].as_str().unwrap_or("refused").to_owned())),
    }
}

/// One line of a request from `received`, once it is whole (or the reason
/// it never will be).
pub fn request_line(received: &[u8]) -> Option<Result<Value, String>> {
    let Some(end) = received.iter().position(|&b| b == b'\n') else {
        return (received.len() > MAX_REQUEST)
            .then(|| Err(format!("a request has at most {MAX_REQUEST} bytes")));
    };
    Some(serde_json::from_slice(&received[..end]).map_err(|e| format!("not a JSON request: {e}")))
}

/// The answer line of a command.
pub fn answer(result: Result<(String, Value), String>) -> Vec<u8> {
    let value = match result {
        Ok((text, data)) => json!({ "ok": true, "text": text, "data": data }),
        Err(error) => json!({ "ok": false, "error": error }),
    };
    let mut line = value.to_string();
    line.push('\n');
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn requests_of_the_command_line() {
        let r = request_of(&args("kick bob --for 10m --reason spam")).unwrap();
        assert_eq!(r, json!({"cmd": "kick", "target": "bob", "for_secs": 600, "reason": "spam"}));
        assert_eq!(request_of(&args("say hello everyone")).unwrap()["text"], "hello everyone");
        assert_eq!(request_of(&args("ban 10.0.0.0/8")).unwrap()["target"], "10.0.0.0/8");
        for bad in [
            "",
            "kick",
            "kick a b",
            "who x",
            "mute bob --reason x",
            "kick bob --for",
            "kick bob --for 5x",
            "fly",
        ] {
            let e =
                request_of(&args(bad).into_iter().filter(|a| !a.is_empty()).collect::<Vec<_>>());
            assert!(matches!(e, Err(CtlError::Usage(_))), "{bad}: {e:?}");
        }
    }

    #[test]
    fn a_request_is_one_line_of_json() {
        assert_eq!(request_line(b"{\"cmd\":"), None);
        assert_eq!(request_line(b"{\"cmd\":\"who\"}\n"), Some(Ok(json!({"cmd": "who"}))));
        assert!(matches!(request_line(b"who\n"), Some(Err(_))));
        assert!(matches!(request_line(&vec![b'x'; MAX_REQUEST + 1]), Some(Err(_))));
    }
}
