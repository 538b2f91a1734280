#!/usr/bin/env python3
"""Turns one run into load-tests/results/NAME.json and NAME.png: k6 and wrk figures of orderflow
and the baseline, their ratios, per-step figures of a sustain run, and the server's samples
(throughput, latency and RSS over time).
Usage: report.py NAME RUN_DIR"""
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

name, run = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
results = os.path.join(here, "results")
os.makedirs(results, exist_ok=True)
# Seconds at the start of a sustain step left out of its figures: the rate settles first.
WARMUP_S = 5


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def k6_figures(summary):
    if not summary:
        return None
    m = summary["metrics"]
    out = {"requests_per_s": m.get("http_reqs", {}).get("rate"),
           "failed_rate": m.get("http_req_failed", {}).get("value")}
    for metric in ("http_req_duration{name:checkout}", "http_req_duration{name:order}",
                   "accept_to_terminal_polled", "accept_to_terminal_ws"):
        if metric in m:
            out[metric] = {k: m[metric].get(k) for k in ("med", "p(90)", "p(95)", "p(99)", "max", "count")
                           if k in m[metric]}
    if "iterations" in m:
        out["iterations"] = m["iterations"].get("count")
    # Arrival-rate executors show overload as iterations never started, not as latency.
    out["dropped_iterations"] = m.get("dropped_iterations", {}).get("count", 0)
    checks = m.get("checks")
    if checks:
        out["checks_passed_rate"] = checks.get("value")
    return out


def wrk_figures(out):
    try:
        with open(os.path.join(run, f"wrk-{out}.txt")) as f:
            for line in f:
                if line.startswith("wrk_summary"):
                    return {k: float(v) for k, v in (p.split("=") for p in line.split()[1:])}
    except OSError:
        pass
    return None


def quantile(buckets_now, buckets_before, q):
    """The q-quantile of the observations between two scrapes, from cumulative buckets."""
    edges = sorted((float("inf") if le == "+Inf" else float(le), le) for le in buckets_now)
    counts = [(edge, buckets_now[le] - buckets_before.get(le, 0.0)) for edge, le in edges]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    for edge, c in counts:
        if c >= q * total:
            return edge
    return None


def ms(bound):
    return None if bound in (None, float("inf")) else round(bound * 1000, 1)


def window(samples, begin, end):
    """Rates and latency quantiles between the samples nearest to `begin` and `end` (epoch s)."""
    inside = [s for s in samples if "ts" in s and begin <= s["ts"] <= end]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    dt = b["ts"] - a["ts"]
    out = {"seconds": round(dt, 1),
           "accepted_per_s": round((b["accepted"] - a["accepted"]) / dt, 1),
           "terminal_per_s": round((b["terminal"] - a["terminal"]) / dt, 1)}
    for kind, label in (("lifetime", "accept_to_terminal_ms"), ("checkout", "server_checkout_ms")):
        out[label] = {"p50": ms(quantile(b["buckets"][kind], a["buckets"][kind], 0.5)),
                      "p99": ms(quantile(b["buckets"][kind], a["buckets"][kind], 0.99))}
    out["rss_mib_max"] = round(max(s["rss_kib"] for s in inside) / 1024, 1)
    # Where the CPU goes: microseconds of each kind of thread per order that reached a terminal
    # state (tokio-rt-worker: HTTP, stages, projector; orderflow-log: the log's writer;
    # orderflow-write: the stores' writer).
    orders = b["terminal"] - a["terminal"] or b["accepted"] - a["accepted"]
    if orders > 0 and a.get("cpu_s") and b.get("cpu_s"):
        per = {name: round((b["cpu_s"][name] - a["cpu_s"].get(name, 0.0)) / orders * 1e6, 1)
               for name in b["cpu_s"]}
        # The total is the process's own counter where the sample has it (it keeps the CPU of
        # threads that exited during the window); older samples only have the threads' sum.
        process = per.pop("(process)", None)
        per = {name: us for name, us in sorted(per.items(), key=lambda kv: -kv[1]) if us >= 0.5}
        per["total"] = process if process is not None else round(sum(per.values()), 1)
        out["cpu_us_per_order"] = per
    return out


def whole_run(samples):
    out = {}
    if len(samples) < 2:
        return out
    # Rates over the seconds in which orderflow accepted orders (idle seconds, such as the
    # baseline's part of the run, do not count).
    busy = [(a, b) for a, b in zip(samples, samples[1:]) if b["accepted"] > a["accepted"]]
    seconds = sum(b["t"] - a["t"] for a, b in busy)
    if seconds > 0:
        out["server_accepted_per_s"] = round(sum(b["accepted"] - a["accepted"] for a, b in busy) / seconds, 1)
        out["server_busy_seconds"] = round(seconds, 1)
    out["orders_completed"] = samples[-1].get("completed", 0) - samples[0].get("completed", 0)
    out["orders_terminal"] = samples[-1]["terminal"] - samples[0]["terminal"]
    out["peak_rss_mib"] = round(max(s["rss_kib"] for s in samples) / 1024, 1)
    disk = [s["disk_mib"] for s in samples if s.get("disk_mib") is not None]
    if disk:
        out["data_dir_mib_max"] = max(disk)
        out["data_dir_mib_last"] = disk[-1]
    first_half = [s["rss_kib"] for s in samples[: len(samples) // 2]]
    second_half = [s["rss_kib"] for s in samples[len(samples) // 2:]]
    if first_half and second_half:
        out["rss_mib_first_half_max"] = round(max(first_half) / 1024, 1)
        out["rss_mib_second_half_max"] = round(max(second_half) / 1024, 1)
    # Flat memory: after the first fifth of the run (caches and pools filling up), the range of
    # RSS and its least-squares trend in MiB per minute.
    settled = [s for s in samples if s["t"] >= samples[0]["t"] + (samples[-1]["t"] - samples[0]["t"]) / 5]
    if len(settled) >= 10:
        ts = [s["t"] for s in settled]
        rss = [s["rss_kib"] / 1024 for s in settled]
        mt, mr = sum(ts) / len(ts), sum(rss) / len(rss)
        var = sum((t - mt) ** 2 for t in ts)
        slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rss)) / var if var else 0.0
        out["rss_mib_after_first_fifth"] = {"min": round(min(rss), 1), "max": round(max(rss), 1),
                                            "trend_mib_per_min": round(slope * 60, 2)}
    whole = window(samples, samples[0].get("ts", 0), samples[-1].get("ts", 0)) or {}
    if "cpu_us_per_order" in whole:
        out["cpu_us_per_order"] = whole["cpu_us_per_order"]
    for kind, label in (("checkout", "server_checkout_ms"), ("lifetime", "server_accept_to_terminal_ms")):
        now, before = samples[-1]["buckets"][kind], samples[0]["buckets"][kind]
        if now:
            out[label] = {"p50": ms(quantile(now, before, 0.5)), "p99": ms(quantile(now, before, 0.99)),
                          "note": "upper bucket bound"}
    return out


def ratio(a, b, digits=3):
    return round(a / b, digits) if a is not None and b else None


samples = {mode: lines(os.path.join(run, f"samples-{mode}.jsonl")) for mode in ("serve", "ingest")}
report = {"name": name, "meta": load(os.path.join(run, "meta.json"))}
for mode in ("serve", "ingest"):
    if samples[mode]:
        report[mode] = whole_run(samples[mode])
        try:
            with open(os.path.join(run, f"peak-rss-{mode}.kib")) as f:
                report[mode]["peak_rss_mib"] = round(int(f.read().strip() or 0) / 1024, 1)
        except (OSError, ValueError):
            pass

ratios = {}
of, base = k6_figures(load(os.path.join(run, "k6-orderflow.json"))), k6_figures(load(os.path.join(run, "k6-baseline.json")))
if of:
    report["k6_orderflow"] = of
if base:
    report["k6_baseline"] = base
if of and base and base.get("requests_per_s"):
    ratios["k6_requests_per_s"] = ratio(of["requests_per_s"], base["requests_per_s"])
    a, b = of.get("http_req_duration{name:checkout}"), base.get("http_req_duration{name:checkout}")
    if a and b and b.get("p(99)"):
        ratios["k6_checkout_p99"] = ratio(a["p(99)"], b["p(99)"], 2)

wrk = {out: wrk_figures(out) for out in ("orderflow", "baseline", "orderflow-80", "baseline-80", "serve")}
wrk = {k: v for k, v in wrk.items() if v}
if wrk:
    report["wrk"] = wrk
if "orderflow" in wrk and "baseline" in wrk:
    # Only 2xx answers count as throughput.
    ratios["ingest_accepted_per_s"] = ratio(wrk["orderflow"]["ok_rps"], wrk["baseline"]["ok_rps"])
if "orderflow-80" in wrk and "baseline-80" in wrk:
    ratios["ingest_p99_at_80_percent"] = ratio(wrk["orderflow-80"]["p99_ms"], wrk["baseline-80"]["p99_ms"], 2)

def redis_commands_by_name(run, rate, orders):
    """Redis commands an order over one step, by command (EVALSHA counts every script)."""
    def calls(path):
        found = {}
        if os.path.exists(path):
            for line in open(path):
                m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
                if m:
                    found[m.group(1)] = int(m.group(2))
        return found
    before = calls(os.path.join(run, f"redis-{rate}-before.txt"))
    after = calls(os.path.join(run, f"redis-{rate}-after.txt"))
    per_order = {name: round((n - before.get(name, 0)) / orders, 2) for name, n in after.items()}
    return dict(sorted(((k, v) for k, v in per_order.items() if v > 0), key=lambda kv: -kv[1]))


steps = lines(os.path.join(run, "steps.jsonl"))
if steps:
    report["steps"] = []
    for s in steps:
        figures = window(samples["serve"], s["start"] + WARMUP_S, s["end"]) or {}
        drained = window(samples["serve"], s["start"], s["drained"])
        entry = {"rate": s["rate"], **figures,
                 "wrk_orderflow": wrk_figures(f"orderflow-{s['rate']}"),
                 "wrk_baseline": wrk_figures(f"baseline-{s['rate']}"),
                 "drain_seconds": round(s["drained"] - s["end"], 1)}
        if drained:
            entry["whole_step_accept_to_terminal_ms"] = drained["accept_to_terminal_ms"]
        if "refused_so_far" in s:
            # Checkouts the server refused (shed over the backlog bound, rate limited, …) by the
            # end of this step, counted since the start.
            entry["refused_so_far"] = s["refused_so_far"]
        if s.get("orders") and s.get("redis_commands"):
            entry["redis_commands_per_order"] = round(s["redis_commands"] / s["orders"], 1)
            entry["redis_cpu_us_per_order"] = round(s["redis_cpu_us"] / s["orders"], 1)
            by_name = redis_commands_by_name(run, s["rate"], s["orders"])
            if by_name:
                entry["redis_commands_per_order_by_name"] = by_name
        wo, wb = entry["wrk_orderflow"], entry["wrk_baseline"]
        if wo and wb:
            entry["checkout_p99_ratio_to_baseline"] = ratio(wo["p99_ms"], wb["p99_ms"], 2)
        report["steps"].append(entry)
    # The target: every accepted order terminal within 100 ms at p99, the rate kept up.
    met = [e["rate"] for e in report["steps"]
           if (e.get("whole_step_accept_to_terminal_ms") or {}).get("p99") is not None
           and e["whole_step_accept_to_terminal_ms"]["p99"] <= 100
           and e.get("terminal_per_s", 0) >= 0.97 * e["rate"]]
    report["highest_rate_with_p99_within_100ms"] = max(met, default=None)
report["ratios_to_baseline"] = ratios

with open(os.path.join(results, f"{name}.json"), "w") as f:
    json.dump(report, f, indent=2)


def plot(series, title, path):
    t, acc, term, p99c, p99l, rss, disk = [], [], [], [], [], [], []
    for before, now in zip(series, series[1:]):
        dt = now["t"] - before["t"]
        if dt <= 0:
            continue
        t.append(now["t"])
        acc.append((now["accepted"] - before["accepted"]) / dt)
        term.append((now["terminal"] - before["terminal"]) / dt)
        p99c.append(ms(quantile(now["buckets"]["checkout"], before["buckets"]["checkout"], 0.99)))
        p99l.append(ms(quantile(now["buckets"]["lifetime"], before["buckets"]["lifetime"], 0.99)))
        rss.append(now["rss_kib"] / 1024)
        disk.append(now.get("disk_mib"))
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, acc, label="accepted/s")
    axes[0].plot(t, term, label="terminal/s (end to end)")
    axes[0].set_ylabel("orders/s")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, p99c, label="checkout p99 (bucket bound)")
    axes[1].plot(t, p99l, label="accept→terminal p99 (bucket bound)")
    axes[1].set_ylabel("ms")
    axes[1].set_yscale("log")
    axes[1].legend(loc="upper right")
    axes[2].plot(t, rss, color="tab:red", label="RSS")
    axes[2].set_ylabel("RSS MiB")
    axes[2].set_xlabel("seconds")
    axes[2].set_ylim(bottom=0)
    if any(d is not None for d in disk):
        on_disk = axes[2].twinx()
        on_disk.plot(t, disk, color="tab:gray", linestyle="--", label="data directory")
        on_disk.set_ylabel("data directory MiB (dashed)")
        on_disk.set_ylim(bottom=0)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if len(samples["serve"]) > 2:
    plot(samples["serve"], f"orderflow serve — {name}", os.path.join(results, f"{name}.png"))
if len(samples["ingest"]) > 2:
    plot(samples["ingest"], f"orderflow ingest — {name}", os.path.join(results, f"{name}-ingest.png"))

summary = {k: report[k] for k in ("ratios_to_baseline", "highest_rate_with_p99_within_100ms") if k in report}
for mode in ("serve", "ingest"):
    if mode in report:
        summary[f"{mode}_peak_rss_mib"] = report[mode].get("peak_rss_mib")
print(json.dumps(summary))
for e in report.get("steps", []):
    life = e.get("whole_step_accept_to_terminal_ms") or {}
    print(f"  {e['rate']}/s: accepted {e.get('accepted_per_s')}/s, terminal {e.get('terminal_per_s')}/s, "
          f"accept→terminal p50 {life.get('p50')} ms p99 {life.get('p99')} ms, "
          f"checkout p99 {(e.get('wrk_orderflow') or {}).get('p99_ms')} ms "
          f"(baseline {(e.get('wrk_baseline') or {}).get('p99_ms')} ms), drained in {e.get('drain_seconds')} s"
          + (f", Redis {e['redis_commands_per_order']} commands and {e['redis_cpu_us_per_order']} µs CPU an order"
             if "redis_commands_per_order" in e else ""))
print(f"wrote {os.path.join(results, name + '.json')}")
