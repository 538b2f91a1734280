#!/usr/bin/env python3
"""Samples a running orderflow once a second: its counters and latency histograms from
/metrics, its RSS and its threads' CPU time from /proc and, every DISK_EVERY seconds, the size
of its data directory (its `--data-dir`), as JSON lines, until it is stopped (SIGTERM) or the
server goes away. The sampler shares the cores it measures, so it reads as little as it can:
a data directory holds one file per customer email (`mail/`), and statting them all every
second cost a fifth of a core at 3,000 orders/s.
Usage: sample.py METRICS_URL PID OUT.jsonl"""
import json
import os
import re
import signal
import sys
import time
import urllib.request

url, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
# The series read; every other line of /metrics is skipped before the regex.
WANTED = ("orderflow_checkouts_total", "orderflow_orders_terminal_total",
          "orderflow_checkout_seconds_bucket", "orderflow_order_lifetime_seconds_bucket")
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$')


def scrape():
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    counters = {"accepted": 0.0, "refused": 0.0, "terminal": 0.0, "completed": 0.0}
    buckets = {"checkout": {}, "lifetime": {}}
    for line in text.splitlines():
        if not line.startswith(WANTED):
            continue
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "orderflow_checkouts_total":
            key = "accepted" if 'outcome="accepted"' in labels else "refused"
            counters[key] += value
        elif name == "orderflow_orders_terminal_total":
            counters["terminal"] += value
            if 'status="completed"' in labels:
                counters["completed"] += value
        elif name in ("orderflow_checkout_seconds_bucket", "orderflow_order_lifetime_seconds_bucket"):
            le = re.search(r'(?:^|[{,])le="([^"]+)"', labels).group(1)
            kind = "checkout" if name.startswith("orderflow_checkout") else "lifetime"
            buckets[kind][le] = buckets[kind].get(le, 0.0) + value
    return counters, buckets


def data_dir():
    """The process's --data-dir argument, if it has one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    for flag, value in zip(args, args[1:]):
        if flag == "--data-dir":
            return value
    return None


DATA = data_dir()


# Seconds between two readings of the data directory's size.
DISK_EVERY = 10


def disk_mib():
    """Bytes in the data directory, as files hold them."""
    if not DATA:
        return None
    total = 0
    pending = [DATA]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    return round(total / 1048576, 1)


TICK = os.sysconf("SC_CLK_TCK")
# The key of the whole process's CPU time among the per-thread-name sums.
PROCESS = "(process)"


def cpu_seconds():
    """CPU time (user + system) of the process's threads, summed by thread name, and of the
    whole process under PROCESS."""
    out = {}
    try:
        # The whole process's counters keep the CPU of threads that have exited (the blocking
        # pool's, say), which a sum over the living threads drops.
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        out[PROCESS] = (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        pass
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The name sits in parentheses and may hold spaces; the fields after it are fixed.
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


with open(out, "w") as f:
    start = time.time()
    # The last reading of the data directory, repeated until the next one.
    disk, disk_at = None, None
    while running:
        try:
            counters, buckets = scrape()
            now = time.time()
            if disk_at is None or now - disk_at >= DISK_EVERY:
                disk, disk_at = disk_mib(), now
            f.write(json.dumps({"t": round(now - start, 3), "ts": round(now, 3), "rss_kib": rss_kib(), "disk_mib": disk,
                                "cpu_s": cpu_seconds(), **counters, "buckets": buckets}) + "\n")
            f.flush()
        except Exception:
            # A slow scrape under load skips a second; a server that is gone ends the run.
            try:
                os.kill(pid, 0)
            except OSError:
                break
        time.sleep(1)
