#!/usr/bin/env python3
"""Turns one run into load-tests/results/NAME.json and NAME.png: k6 summaries of orderflow and
the baseline, wrk figures, ratios, and the server's samples (throughput, latency, RSS over time).
Usage: report.py NAME RUN_DIR"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

name, run = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
results = os.path.join(here, "results")
os.makedirs(results, exist_ok=True)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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


def wrk_figures(path):
    try:
        with open(path) as f:
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


samples = []
if os.path.exists(os.path.join(run, "samples.jsonl")):
    with open(os.path.join(run, "samples.jsonl")) as f:
        samples = [json.loads(line) for line in f if line.strip()]

report = {
    "name": name,
    "orderflow": k6_figures(load(os.path.join(run, "k6-orderflow.json"))),
    "baseline": k6_figures(load(os.path.join(run, "k6-baseline.json"))),
    "wrk_orderflow": wrk_figures(os.path.join(run, "wrk-orderflow.txt")),
    "wrk_baseline": wrk_figures(os.path.join(run, "wrk-baseline.txt")),
    "peak_rss_mib": round(max((s["rss_kib"] for s in samples), default=0) / 1024, 1),
    "meta": load(os.path.join(run, "meta.json")),
}
if samples:
    # Rates over the seconds in which orderflow accepted orders (idle seconds, such as the
    # baseline's part of the run, do not count).
    busy = [(a, b) for a, b in zip(samples, samples[1:]) if b["accepted"] > a["accepted"]]
    seconds = sum(b["t"] - a["t"] for a, b in busy)
    if seconds > 0:
        report["server_accepted_per_s"] = round(sum(b["accepted"] - a["accepted"] for a, b in busy) / seconds, 1)
        report["server_busy_seconds"] = round(seconds, 1)
    report["orders_completed"] = samples[-1].get("completed", 0) - samples[0].get("completed", 0)
    report["orders_terminal"] = samples[-1]["terminal"] - samples[0]["terminal"]
    first_half = [s["rss_kib"] for s in samples[: len(samples) // 2]]
    second_half = [s["rss_kib"] for s in samples[len(samples) // 2:]]
    if first_half and second_half:
        report["rss_mib_first_half_max"] = round(max(first_half) / 1024, 1)
        report["rss_mib_second_half_max"] = round(max(second_half) / 1024, 1)
if len(samples) > 1:
    for kind, label in (("checkout", "server_checkout_ms"), ("lifetime", "server_accept_to_terminal_ms")):
        now, before = samples[-1]["buckets"][kind], samples[0]["buckets"][kind]
        if now:
            figures = {}
            for q, key in ((0.5, "p50"), (0.99, "p99")):
                bound = quantile(now, before, q)
                figures[key] = None if bound in (None, float("inf")) else round(bound * 1000, 1)
            report[label] = {**figures, "note": "upper bucket bound"}
ratios = {}
of, base = report["orderflow"], report["baseline"]
if of and base and base.get("requests_per_s"):
    ratios["k6_requests_per_s"] = round(of["requests_per_s"] / base["requests_per_s"], 3)
    a, b = of.get("http_req_duration{name:checkout}"), base.get("http_req_duration{name:checkout}")
    if a and b and b.get("p(99)"):
        ratios["k6_checkout_p99"] = round(a["p(99)"] / b["p(99)"], 2)
wo, wb = report["wrk_orderflow"], report["wrk_baseline"]
if wo and wb and wb.get("ok_rps"):
    # Only 2xx answers count as throughput.
    ratios["wrk_accepted_per_s"] = round(wo["ok_rps"] / wb["ok_rps"], 3)
    ratios["wrk_p99"] = round(wo["p99_ms"] / wb["p99_ms"], 2) if wb.get("p99_ms") else None
report["ratios_to_baseline"] = ratios

with open(os.path.join(results, f"{name}.json"), "w") as f:
    json.dump(report, f, indent=2)

if len(samples) > 2:
    t, acc, term, p99c, p99l, rss = [], [], [], [], [], []
    for before, now in zip(samples, samples[1:]):
        dt = now["t"] - before["t"]
        if dt <= 0:
            continue
        t.append(now["t"])
        acc.append((now["accepted"] - before["accepted"]) / dt)
        term.append((now["terminal"] - before["terminal"]) / dt)
        q = quantile(now["buckets"]["checkout"], before["buckets"]["checkout"], 0.99)
        p99c.append(q * 1000 if q not in (None, float("inf")) else None)
        q = quantile(now["buckets"]["lifetime"], before["buckets"]["lifetime"], 0.99)
        p99l.append(q * 1000 if q not in (None, float("inf")) else None)
        rss.append(now["rss_kib"] / 1024)
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
    axes[2].plot(t, rss, color="tab:red")
    axes[2].set_ylabel("RSS MiB")
    axes[2].set_xlabel("seconds")
    axes[2].set_ylim(bottom=0)
    fig.suptitle(f"orderflow — {name}")
    fig.tight_layout()
    fig.savefig(os.path.join(results, f"{name}.png"), dpi=80)

print(json.dumps({k: report[k] for k in ("ratios_to_baseline", "peak_rss_mib") if k in report}))
print(f"wrote {os.path.join(results, name + '.json')}")
