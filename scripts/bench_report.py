#!/usr/bin/env python3
"""The report of one `scripts/bench.sh` run: the results table, the goals of
issue 3 judged from it, and the ratios to the peers measured in the same run.

Usage: bench_report.py RESULTS.jsonl COMMAND_LINE [--into BENCHMARKS.md]
RESULTS.jsonl holds one line per scenario run, as bench.sh writes them:
{"server": ..., "tls": bool, "args": "...", "result": <ragnarok-load's JSON line>}.
Prints the report; with --into, also puts it between the bench markers.
"""
import datetime
import json
import platform
import subprocess
import sys

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def load(path):
    """Runs grouped by (server, tls, scenario, args), in first-seen order."""
    groups = {}
    for line in open(path):
        r = json.loads(line)
        key = (r["server"], r["tls"], r["result"]["scenario"], r["args"])
        groups.setdefault(key, []).append(r["result"])
    return groups


def median(group):
    """The median run by server CPU (the higher middle one for an even count)."""
    ranked = sorted(group, key=lambda x: x.get("cpu_us_per_delivery") or 0)
    return ranked[len(ranked) // 2]


def f(v, fmt="{:.3f}"):
    return "—" if v is None else fmt.format(v)


def results_table(groups):
    out = ["| server | transport | scenario | result | server CPU µs/delivery (private, floor: per round trip) "
           "| server RSS | KiB/user | load generator CPU |",
           "|---|---|---|---|---|---|---|---|"]
    for (server, tls, scenario, args), group in groups.items():
        x = median(group)
        if scenario == "fanout":
            lost, reordered = (sum(g[k] for g in group) for k in ("lost", "reordered"))
            res = (f'{x["per_sec"]:,.0f} deliveries/s; p50/p99/max {x["p50_ms"]:.1f}/{x["p99_ms"]:.1f}/'
                   f'{x["max_ms"]:.1f} ms; lost {lost}, reordered {reordered}' + (" (all runs)" if len(group) > 1 else ""))
        elif scenario == "private":
            res = f'{x["per_sec"]:,.0f} round trips/s; p50/p99 {x["p50_ms"]:.2f}/{x["p99_ms"]:.2f} ms'
        elif scenario == "floor":
            res = f'{x["per_sec"]:,.0f} round trips/s (bare relay: one read + one write per message)'
        elif scenario == "joinstorm":
            res = f'{x["logged_in"]} of {x["users"]} in {x["seconds"]:.2f} s'
        else:
            res = f'{x["logged_in"]} users held'
        cpu = f(x.get("cpu_us_per_delivery"))
        if len(group) > 1:
            cpu += f" (median of {len(group)}: " + " / ".join(f(g.get("cpu_us_per_delivery")) for g in group) + ")"
        out.append(f'| {server} | {"wss" if tls else "ws"} | {scenario} {args} | {res} | {cpu} '
                   f'| {f(x.get("rss_kib"), "{} KiB")} | {f(x.get("kib_per_user"), "{:.2f}")} '
                   f'| {f(x.get("loadgen_cpu_pct"), "{:.0f} %")} |')
    return out


def find(groups, server, tls, scenario, flag=None):
    """The runs of one scenario; `flag` (e.g. "-n 10000") picks among its sizes."""
    for (s, t, sc, args), group in groups.items():
        if s == server and t == tls and sc == scenario and (flag is None or f"{flag} " in args + " "):
            return group
    return None


def goals_table(groups):
    """Each goal of issue 3 with Ragnarok's figure from this run and a verdict."""
    def fanout(tls):
        return find(groups, "ragnarok", tls, "fanout", "-n 1000")

    def cpu_goal(tls, limit):
        group = fanout(tls)
        if not group:
            return None
        x = median(group)
        runs = " / ".join(f(g.get("cpu_us_per_delivery")) for g in group)
        cpu = x.get("cpu_us_per_delivery")  # None when the server's CPU was not sampled
        shown = f'{f(cpu)} µs' + (f" (runs: {runs})" if len(group) > 1 else "")
        return shown, cpu is not None and cpu <= limit

    def rate_goal():
        group = fanout(False)
        if not group:
            return None
        x = median(group)
        at_ceiling = (x.get("loadgen_cpu_pct") or 0) >= 99
        shown = f'{x["per_sec"]:,.0f}/s (load generator at {f(x.get("loadgen_cpu_pct"), "{:.0f} %")} of its core)'
        return shown, x["per_sec"] >= 1_000_000 or at_ceiling

    def latency_goal():
        group = fanout(False)
        if not group:
            return None
        x = median(group)
        lost, reordered = (sum(g[k] for g in group) for k in ("lost", "reordered"))
        p99s = [g["p99_ms"] for g in group]
        shown = f'p99 {x["p99_ms"]:.1f} ms' + (f' ({min(p99s):.1f}–{max(p99s):.1f} in the runs)' if len(group) > 1 else "")
        return shown + f", lost {lost}, reordered {reordered}", x["p99_ms"] <= 10 and lost == 0 and reordered == 0

    def idle_goal(tls, limit):
        group = find(groups, "ragnarok", tls, "idle", "-n 10000")
        if not group:
            return None
        x = median(group)
        held = x["logged_in"] == 10000
        return f'{f(x.get("kib_per_user"), "{:.2f}")} KiB per user, {x["logged_in"]} held', \
            held and x.get("kib_per_user") is not None and x["kib_per_user"] <= limit

    def join_goal():
        group = find(groups, "ragnarok", False, "joinstorm", "-n 10000")
        if not group:
            return None
        x = median(group)
        return f'{x["logged_in"]} of {x["users"]} in {x["seconds"]:.2f} s', \
            x["logged_in"] == 10000 and x["seconds"] <= 3

    def private_goal():
        group = find(groups, "ragnarok", False, "private", "-k 50")
        if not group:
            return None
        x = median(group)
        relay = find(groups, "relay", False, "floor")
        shown = f'{x["per_sec"]:,.0f} round trips/s'
        if relay:
            shown += f' (the bare relay: {median(relay)["per_sec"]:,.0f} in this run)'
        return shown, x["per_sec"] >= 100_000

    goals = [
        ("fanout ws: server CPU per delivery ≤ 0.4 µs", cpu_goal(False, 0.4)),
        ("fanout wss: server CPU per delivery ≤ 0.5 µs", cpu_goal(True, 0.5)),
        ("fanout ws: ≥ 1,000,000 deliveries/s, or the load generator at its ceiling", rate_goal()),
        ("fanout ws: p99 ≤ 10 ms, 0 lost, 0 reordered", latency_goal()),
        ("idle ws, 10,000 users: ≤ 2 KiB per user", idle_goal(False, 2)),
        ("idle wss, 10,000 users: ≤ 16 KiB per user", idle_goal(True, 16)),
        ("joinstorm ws: 10,000 users in ≤ 3 s", join_goal()),
        ("private ws, 50 pairs: ≥ 100,000 round trips/s", private_goal()),
    ]
    out = ["| goal (issue 3) | Ragnarok in this run | met? |", "|---|---|---|"]
    for goal, judged in goals:
        if judged is None:
            out.append(f"| {goal} | not run | — |")
        else:
            shown, met = judged
            out.append(f'| {goal} | {shown} | {"yes" if met else "no"} |')
    return out


# The figures compared with the peers: (scenario, transport, size flag, label,
# how to read it from a result, True when lower is better).
COMPARED = [
    ("fanout", False, "-n 1000", "fanout ws: server CPU µs per delivery", lambda x: x.get("cpu_us_per_delivery"), True),
    ("fanout", False, "-n 1000", "fanout ws: deliveries/s", lambda x: x["per_sec"], False),
    ("fanout", False, "-n 1000", "fanout ws: p99 ms", lambda x: x["p99_ms"], True),
    ("fanout", True, "-n 1000", "fanout wss: server CPU µs per delivery", lambda x: x.get("cpu_us_per_delivery"), True),
    ("fanout", True, "-n 1000", "fanout wss: deliveries/s", lambda x: x["per_sec"], False),
    ("idle", False, "-n 1000", "idle ws, 1,000 users: KiB per user", lambda x: x["kib_per_user"], True),
    ("idle", True, "-n 1000", "idle wss, 1,000 users: KiB per user", lambda x: x["kib_per_user"], True),
    ("private", False, "-k 50", "private ws: round trips/s", lambda x: x["per_sec"], False),
    ("private", False, "-k 50", "private ws: server CPU µs per round trip", lambda x: x.get("cpu_us_per_delivery"), True),
    ("joinstorm", False, "-n 1000", "joinstorm ws, 1,000 users: seconds", lambda x: x["seconds"], True),
]


def number(v):
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}" if v < 10 else f"{v:.1f}"


def ratios_table(groups, peers):
    """Each peer's figure beside Ragnarok's, and how many times better Ragnarok is."""
    out = ["| figure | Ragnarok | " + " | ".join(peers) + " |", "|---|---|" + "---|" * len(peers)]
    for scenario, tls, flag, label, read, lower_better in COMPARED:
        ours = find(groups, "ragnarok", tls, scenario, flag)
        if not ours:
            continue
        mine = read(median(ours))
        if mine is None:
            continue
        cells = []
        for peer in peers:
            theirs = find(groups, peer, tls, scenario, flag)
            if not theirs:
                cells.append("not run")
                continue
            other = read(median(theirs))
            if other is None:
                cells.append("—")
                continue
            better = (other / mine if lower_better else mine / other) if mine and other else None
            cells.append(number(other) + ("" if better is None else f" ({better:.1f}×)"))
        out.append(f"| {label} | {number(mine)} | " + " | ".join(cells) + " |")
    return out


def report(groups, command_line):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    out = [f"Command: `{command_line.strip()}` · date: {datetime.date.today()} · "
           f"machine: {nproc} cores, {cpu}, {platform.release()}", ""]
    out += results_table(groups)
    out += ["", "Goals, judged from the rows above (fanout: the median run):", ""]
    out += goals_table(groups)
    peers = [s for s in dict.fromkeys(k[0] for k in groups) if s not in ("ragnarok", "relay")]
    if peers:
        out += ["", "The peers in the same run: each one's figure (medians for fanout), and in brackets how many "
                "times better Ragnarok's is (less CPU, time or memory; more deliveries or round trips):", ""]
        out += ratios_table(groups, peers)
    return "\n".join(out)


def main(argv):
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--into"):
        sys.exit(__doc__)
    text = report(load(argv[1]), argv[2])
    print(text)
    if len(argv) == 5:
        doc = open(argv[4]).read()
        if START not in doc or END not in doc:
            sys.exit(f"{argv[4]} has no {START} ... {END} markers")
        doc = doc[:doc.index(START) + len(START)] + "\n" + text + "\n" + doc[doc.index(END):]
        open(argv[4], "w").write(doc)


if __name__ == "__main__":
    main(sys.argv)
