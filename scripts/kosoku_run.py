#!/usr/bin/env python3
"""Runs the Autobahn testsuite cases (driven by kosoku) against the echo
endpoint (examples/autobahn_echo.rs: the server's own transport, connection
and outbox) over ws and wss, prints a summary table per section and exits 1
when any case FAILED. Called by scripts/autobahn.sh, which builds the echo
and makes the certificate.

kosoku has no TLS client, so for wss it talks plain TCP to a tunnel in this
script that opens a verified TLS connection to the echo per case: every
byte kosoku sends, in the chunks it sends them, reaches the echo through
its rustls transport, and each end of stream is passed on as a half-close.

(Not named autobahn.py: kosoku's case files import its `autobahn` shim.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import kosoku

SECTIONS = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
# --quick: everything but the large and many-message cases of section 9
# (9.1/9.2 above 1 MiB, 9.3–9.8 in full), which take most of the time.
QUICK_EXCLUDE = ["9.1.5", "9.1.6", "9.2.5", "9.2.6", "9.3.*", "9.4.*", "9.5.*", "9.6.*", "9.7.*", "9.8.*"]
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]

# Why a case is not OK, for those that are not OK by design (the rest are
# reported with kosoku's own verdict text).
KNOWN = {
    "6.4.3": "NON-STRICT: the invalid UTF-8 comes in chops of one frame; tungstenite checks a "
    "frame's UTF-8 once the whole frame is in (it fails fast between frames, cf. 6.4.1/6.4.2), "
    "so Close 1007 comes after the last chop instead of after the second.",
    "6.4.4": "NON-STRICT: as 6.4.3 (invalid UTF-8 inside one frame, detected when the frame is complete).",
    "7.1.6": "INFORMATIONAL by design (implementation-defined close behaviour): the 256 KiB message "
    "and 'Hello World!' sent before the Close are echoed in full, then the close handshake completes.",
    "7.13.1": "INFORMATIONAL by design (close code 5000 is undefined by the spec): answered with "
    "Close 1002, a clean close.",
    "7.13.2": "INFORMATIONAL by design (close code 65535 is undefined by the spec): answered with "
    "Close 1002, a clean close.",
}


class TlsTunnel:
    """Accepts plain TCP on a local port; each connection is relayed over a
    new TLS connection to `target`, verified against `cafile`."""

    BUFFER = 1 << 20

    def __init__(self, target: tuple[str, int], cafile: str):
        self.target = target
        self.context = ssl.create_default_context(cafile=cafile)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            plain, _ = self.listener.accept()
            threading.Thread(target=self._relay, args=(plain,), daemon=True).start()

    def _relay(self, plain: socket.socket) -> None:
        raw = socket.create_connection(self.target)
        try:
            self._pump(plain, raw)
        except (OSError, ssl.SSLError) as e:
            print(f"tunnel: {e}", file=sys.stderr)
        finally:
            plain.close()
            raw.close()

    def _pump(self, plain: socket.socket, raw: socket.socket) -> None:
        for s in (plain, raw):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:  # the handshake, blocking
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("TLS handshake: end of stream")
                incoming.write(data)
        raw.sendall(outgoing.read())
        plain.setblocking(False)
        raw.setblocking(False)
        to_raw, to_plain = bytearray(), bytearray()
        plain_eof = raw_eof = raw_shut = plain_shut = False
        while not (raw_shut and plain_shut):
            readers = [s for s, eof, buf in ((plain, plain_eof, to_raw), (raw, raw_eof, to_plain))
                       if not eof and len(buf) < self.BUFFER]
            writers = [s for s, buf in ((raw, to_raw), (plain, to_plain)) if buf]
            readable, writable, _ = select.select(readers, writers, [])
            if plain in readable:
                data = plain.recv(65536)
                if data:
                    tls.write(data)
                else:
                    plain_eof = True
            if raw in readable:
                data = raw.recv(65536)
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()
                while True:
                    try:
                        data = tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        data = b""
                    if not data:  # close_notify (b"") or the TCP end without it
                        raw_eof = True
                        break
                    to_plain += data
            to_raw += outgoing.read()
            for sock, buf in ((raw, to_raw), (plain, to_plain)):
                if sock in writable and buf:
                    try:
                        del buf[: sock.send(buf)]
                    except BlockingIOError:
                        pass
            # Ends of stream are passed on once what came before them is out.
            if plain_eof and not to_raw and not raw_shut:
                raw.shutdown(socket.SHUT_WR)
                raw_shut = True
            if raw_eof and not to_plain and not plain_shut:
                plain.shutdown(socket.SHUT_WR)
                plain_shut = True


def start_echo(binary: str, tls: tuple[str, str] | None) -> tuple[subprocess.Popen, str]:
    args = [binary, "--port", "0"] + (["--tls", *tls] if tls else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url:
        sys.exit(f"{binary} did not start")
    return proc, url


def verdict(r) -> str:
    """One column per case: the message verdict, FAILED when the close failed."""
    behavior = r.behavior.value
    if behavior == "ERROR":
        return "FAILED"
    if r.behavior_close.value not in ("OK", "INFORMATIONAL"):
        return "FAILED"
    return behavior


async def run(url: str, include: list[str], exclude: list[str]) -> list:
    try:
        return await kosoku.run_fuzzingclient(url, include, exclude)
    except kosoku.FailureError as failure:
        return failure.results


def table(results: list) -> tuple[str, list[str]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    notes = []
    for r in results:
        v = verdict(r)
        counts[r.case_id.split(".")[0]][v] += 1
        if v != "OK":
            why = KNOWN.get(r.case_id) or f"{r.result} / {r.result_close}"
            notes.append(
                f"- {r.case_id} {v} (behavior {r.behavior.value}, close {r.behavior_close.value}, "
                f"remote close code {r.remote_close_code}): {why}"
            )
    lines = ["| section | " + " | ".join(COLUMNS) + " | total |",
             "|---|" + "---:|" * (len(COLUMNS) + 1)]
    total = Counter()
    for section in SECTIONS:
        c = counts.get(section, Counter())
        total.update(c)
        lines.append(f"| {section} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {sum(c.values())} |")
    lines.append("| all | " + " | ".join(str(total[k]) for k in COLUMNS) + f" | {sum(total.values())} |")
    return "\n".join(lines), notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo", required=True, help="the autobahn_echo binary")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", default="target/autobahn", help="kosoku's reports go here")
    parser.add_argument("--quick", action="store_true", help="skip the long cases of section 9")
    parser.add_argument("--only", choices=["ws", "wss"], help="one transport only")
    args = parser.parse_args()

    include = [f"{s}.*" for s in SECTIONS]
    exclude = QUICK_EXCLUDE if args.quick else []
    failed = False
    for transport in ("ws", "wss"):
        if args.only and args.only != transport:
            continue
        proc, url = start_echo(args.echo, (args.cert, args.key) if transport == "wss" else None)
        try:
            target = url
            if transport == "wss":
                host, port = url.removeprefix("wss://").rsplit(":", 1)
                tunnel = TlsTunnel((host, int(port)), args.cert)
                target = f"ws://127.0.0.1:{tunnel.port}"
            started = time.monotonic()
            results = asyncio.run(run(target, include, exclude))
            seconds = time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -9):
            print(f"echo exited with {proc.returncode}", file=sys.stderr)
            failed = True
        try:
            from kosoku._report import write_reports

            write_reports(results, os.path.join(args.out, transport))
        except Exception as e:  # the reports are a convenience; the table is the result
            print(f"could not write kosoku's reports: {e}", file=sys.stderr)
        summary, notes = table(results)
        print(f"\n## {transport} ({url}{', through the TLS tunnel' if transport == 'wss' else ''}):"
              f" {len(results)} cases in {seconds:.1f} s\n\n{summary}\n")
        print("\n".join(notes) if notes else "(every case OK)")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"summary-{transport}.json"), "w") as f:
            json.dump({r.case_id: [verdict(r), r.behavior.value, r.behavior_close.value] for r in results}, f)
        failed |= any(verdict(r) in ("FAILED", "UNIMPLEMENTED") for r in results)
        failed |= not results
    print("\nAutobahn: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
