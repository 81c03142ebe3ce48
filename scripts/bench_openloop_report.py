#!/usr/bin/env python3
"""The report of one `scripts/bench-openloop.sh` run: the table of open-loop
fanout runs and the cost curve read from it.

Usage: bench_openloop_report.py RESULTS.jsonl COMMAND_LINE
RESULTS.jsonl holds one line per run, as bench-openloop.sh writes them:
{"server": ..., "tls": bool, "offered": N, "load": "1m 5m 15m", "result": <ragnarok-load's JSON line>}.
"""
import datetime
import json
import platform
import subprocess
import sys


def f(v, fmt="{:.1f}"):
    return "—" if v is None else fmt.format(v)


def kept_up(x):
    """The server delivered what was offered: every copy of the messages
    sent, nobody cut off, nothing left in a backlog when the run stopped."""
    expected = x["sent_per_sec"] * x["logged_in"]
    return (x["dropped"] == 0 and x["drained"] and x["undelivered"] == 0
            and expected > 0 and x["per_sec"] >= 0.95 * expected)


def notes(x):
    out = []
    if not kept_up(x):
        out.append(f'**saturated**: delivered {x["per_sec"] / max(x["logged_in"], 1):,.0f} of '
                   f'{x["sent_per_sec"]:,.0f} msgs/s to each user')
    if x["dropped"]:
        out.append(f'{x["dropped"]} users cut off')
    if not x["drained"]:
        out.append(f'{x["undelivered"]:,} copies still queued 10 s after the window')
    if (x.get("loadgen_cpu_pct") or 0) >= 90:
        out.append("the load generator near its ceiling: latency partly its own")
    if x["sent_per_sec"] < 0.99 * x["offered_per_sec"]:
        out.append(f'sent only {x["sent_per_sec"]:,.0f}/s')
    return "; ".join(out)


def late(x):
    """Late sends, and how many of them the timer woke late (the rest fell due
    while the load generator was running: busy, or waiting for its core)."""
    if not x["late_sends"]:
        return f'0 of {x["sent"]:,}'
    return (f'{x["late_sends"]} of {x["sent"]:,} ({x["late_woken"]} woken late; '
            f'max {x["max_late_ms"]:.1f} ms)')


def results_table(runs):
    out = ["| server | transport | offered msgs/s | deliveries/s | server CPU, % of a core | µs CPU per delivery "
           "| p50 ms | p99 ms | late sends | lost | load generator CPU | the rest of the machine (steal) | notes |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        x = r["result"]
        lost = str(x["lost"]) + (f' ({x["reordered"]} reordered)' if x["reordered"] else "")
        out.append(
            f'| {r["server"]} | {"wss" if r["tls"] else "ws"} | {r["offered"]:,} | {x["per_sec"]:,.0f} '
            f'| {f(x.get("server_cpu_pct"))} | {f(x.get("cpu_us_per_delivery"), "{:.2f}")} '
            f'| {x["p50_ms"]:.2f} | {x["p99_ms"]:.2f} | {late(x)} '
            f'| {lost} '
            f'| {f(x.get("loadgen_cpu_pct"), "{:.0f} %")} '
            f'| {f(x.get("others_cpu_pct"), "{:.0f} %")} ({f(x.get("steal_pct"), "{:.0f} %")}) '
            f'| {notes(x)} |')
    return out


def cost_curve(runs, users):
    """One row per server and transport: the share of a core at each load,
    and what one core holds at most."""
    loads = list(dict.fromkeys(r["offered"] for r in runs))
    rows = {}
    for r in runs:
        rows.setdefault((r["server"], r["tls"]), {})[r["offered"]] = r["result"]
    out = [f"| server | transport | " + " | ".join(f"{l:,} msgs/s" for l in loads)
           + f" | one core holds (messages/s into {users:,} users) |",
           "|---|---|" + "---|" * len(loads) + "---|"]
    for (server, tls), by_load in rows.items():
        cells = []
        for l in loads:
            x = by_load.get(l)
            if x is None:
                cells.append("not run")
            elif kept_up(x):
                cells.append(f'{f(x.get("server_cpu_pct"), "{:.0f}")} % (p99 {x["p99_ms"]:.0f} ms)')
            else:
                cells.append(f'saturated ({x["per_sec"] / max(x["logged_in"], 1):,.0f} msgs/s delivered)')
        # A work-conserving server fills its core long before it is
        # saturated (it writes each message sooner, in smaller writes), so
        # its capacity is read from the loads it kept up with, not
        # extrapolated from its CPU share.
        ok = [l for l in loads if l in by_load and kept_up(by_load[l])]
        bad = [l for l in loads if l in by_load and not kept_up(by_load[l])]
        if bad:
            most = max(by_load[l]["per_sec"] / max(by_load[l]["logged_in"], 1) for l in bad)
            below = [l for l in ok if l < min(bad)]
            holds = (f'{"between " + format(max(below), ",") + " and " if below else "under "}'
                     f'{min(bad):,} (delivered at most {most:,.0f}/s when saturated)')
        elif ok:
            holds = f"{max(ok):,} or more (the most offered)"
        else:
            holds = "—"
        cells.append(holds)
        out.append(f'| {server} | {"wss" if tls else "ws"} | ' + " | ".join(cells) + " |")
    return out


def report(runs, command_line):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    users = runs[0]["result"]["users"] if runs else 0
    loads = [r["load"] for r in runs]
    out = [f"Command: `{command_line.strip()}` · date: {datetime.date.today()} · "
           f"machine: {nproc} cores, {cpu}, {platform.release()} · "
           f"load average (1/5/15 min) before the first run {loads[0] if loads else '?'}, "
           f"before the last {loads[-1] if loads else '?'}", ""]
    out += results_table(runs)
    out += ["", "The cost curve: the server's share of one core at each offered load into "
            f"{users:,} users (p99 latency in brackets), and what one core holds:", ""]
    out += cost_curve(runs, users)
    return "\n".join(out)


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    runs = [json.loads(line) for line in open(argv[1])]
    print(report(runs, argv[2]))


if __name__ == "__main__":
    main(sys.argv)
