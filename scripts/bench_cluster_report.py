#!/usr/bin/env python3
"""The report of one `scripts/bench-cluster.sh` run: standalone against two
nodes + Redis at the same offered loads, the ratios and the latency Redis
adds, and the capacity run.

Usage: bench_cluster_report.py RESULTS.jsonl COMMAND_LINE [CAPACITY.json]
RESULTS.jsonl holds one line per run: {"setup": "standalone"|"cluster", "tls": bool,
"offered": N, "load": "1m 5m 15m", "result": <ragnarok-load's JSON line>}; in the
cluster runs the result's "procs" are node 0, node 1 and redis-server, in that order.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_openloop_report import f, kept_up, late, notes  # noqa: E402


def procs(x):
    """[(cpu %, µs per delivery, rss KiB)] for node 0, node 1, redis-server
    (None where the setup has none): the standalone server is node 0; the
    one-node setup's processes are node 0 and redis-server."""
    if "procs" in x:
        ps = [(p["cpu_pct"], p["cpu_us_per_delivery"], p["rss_kib"]) for p in x["procs"]]
        return ps if len(ps) == 3 else [ps[0], None, ps[1]]
    return [(x.get("server_cpu_pct"), x.get("cpu_us_per_delivery"), x.get("rss_kib")), None, None]


def cell(p):
    pct, per, _ = p
    return f'{f(pct)} % / {f(per, "{:.2f}")}'


def messages(x):
    """Messages delivered to the room in the window (each to every user)."""
    return x["deliveries"] / max(x["logged_in"], 1)


def redis_per_message(x):
    """redis-server's CPU per message broadcast, in µs (its work is per
    message, not per delivery)."""
    ps = procs(x)
    if ps[2] is None or ps[2][0] is None or not messages(x):
        return None
    return ps[2][0] / 100 * x["seconds"] * 1e6 / messages(x)


def nodes_per_delivery(x):
    ps = [p for p in procs(x)[:2] if p is not None]
    if any(p[1] is None for p in ps):
        return None
    return sum(p[1] for p in ps)


def results_table(runs):
    out = ["| transport | offered msgs/s | setup | sent/s | late sends | deliveries/s | p50 ms | p99 ms | lost "
           "| node 1 (or the server): CPU % of a core / µs per delivery | node 2 | redis-server: % / µs per message "
           "| all of them: % / µs per delivery | load generator CPU | the rest of the machine (steal) | notes |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        x = r["result"]
        ps = procs(x)
        lost = str(x["lost"]) + (f' ({x["reordered"]} reordered)' if x["reordered"] else "")
        node2 = cell(ps[1]) if ps[1] else "—"
        redis = f'{f(ps[2][0])} % / {f(redis_per_message(x), "{:.1f}")}' if ps[2] else "—"
        total = f'{f(x.get("server_cpu_pct"))} % / {f(x.get("cpu_us_per_delivery"), "{:.2f}")}'
        out.append(
            f'| {"wss" if r["tls"] else "ws"} | {r["offered"]:,} | {r["setup"]} | {x["sent_per_sec"]:,.0f} '
            f'| {late(x)} | {x["per_sec"]:,.0f} | {x["p50_ms"]:.2f} | {x["p99_ms"]:.2f} | {lost} '
            f'| {cell(ps[0])} | {node2} | {redis} | {total} '
            f'| {f(x.get("loadgen_cpu_pct"), "{:.0f} %")} '
            f'| {f(x.get("others_cpu_pct"), "{:.0f} %")} ({f(x.get("steal_pct"), "{:.0f} %")}) '
            f'| {notes(x)} |')
    return out


def comparison(runs):
    by = {}
    for r in runs:
        by.setdefault((r["tls"], r["offered"]), {})[r["setup"]] = r["result"]
    out = ["| transport | offered msgs/s | setup | CPU µs per delivery: standalone → this, all processes (×) "
           "| the nodes alone (×) | redis-server µs per message | latency added: p50 / p99 ms "
           "(this − standalone) | p99 ms | both kept up |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (tls, offered), s in by.items():
        for setup in ("one-node", "cluster"):
            a, c = s.get("standalone"), s.get(setup)
            if not a or not c:
                continue
            sa, ct, cn = a.get("cpu_us_per_delivery"), c.get("cpu_us_per_delivery"), nodes_per_delivery(c)
            ratio = lambda v: f'{v / sa:.2f}×' if v is not None and sa else "—"  # noqa: E731
            out.append(
                f'| {"wss" if tls else "ws"} | {offered:,} | {setup} | {f(sa, "{:.2f}")} → {f(ct, "{:.2f}")} ({ratio(ct)}) '
                f'| {f(cn, "{:.2f}")} ({ratio(cn)}) | {f(redis_per_message(c), "{:.1f}")} '
                f'| {c["p50_ms"] - a["p50_ms"]:+.2f} / {c["p99_ms"] - a["p99_ms"]:+.2f} | {c["p99_ms"]:.2f} '
                f'| {"yes" if kept_up(a) and kept_up(c) else "no"} |')
    return out


def capacity(cap_path):
    cap = json.load(open(cap_path))
    out = [f'Capacity: {cap["held"]:,} users logging in across the two nodes '
           f'({"all in" if cap["all_in"] else "NOT all in"} after {cap["seconds_to_all_in"]:.1f} s; '
           f'machine load {cap["machine_load"]}):', "",
           "| process | users online (its /metrics) | its own users | RSS KiB | RSS before KiB | KiB per own user |",
           "|---|---|---|---|---|---|"]
    for k in (0, 1):
        n = cap[f"node{k}"]
        per = ((n["rss_kib"] - n["rss_before_kib"]) / n["local_users"]) if n["local_users"] else None
        out.append(f'| node {k + 1} | {n["users_online"]} | {n["local_users"]} | {n["rss_kib"]:,} '
                   f'| {n["rss_before_kib"]:,} | {f(per, "{:.2f}")} |')
    rd = cap["redis"]
    out.append(f'| redis-server | — | — | {rd["rss_kib"]:,} | {rd["rss_before_kib"]:,} | — |')
    return out


def report(runs, command_line, cap=None):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    loads = [r["load"] for r in runs]
    out = [f"Command: `{command_line.strip()}` · date: {datetime.date.today()} · "
           f"machine: {nproc} cores, {cpu}, {platform.release()} · "
           f"load average (1/5/15 min) before the first run {loads[0] if loads else '?'}, "
           f"before the last {loads[-1] if loads else '?'}", ""]
    if runs:
        out += results_table(runs)
    out += ["", "Cluster against standalone at each load (CPU per delivery of all the serving "
            "processes together; Redis's own work is per message):", ""]
    out += comparison(runs)
    if cap:
        out += [""] + capacity(cap)
    return "\n".join(out)


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    runs = [json.loads(line) for line in open(argv[1])]
    print(report(runs, argv[2], argv[3] if len(argv) == 4 else None))


if __name__ == "__main__":
    main(sys.argv)
