#!/usr/bin/env python3
"""Benchmarks of `arsip serve` (docs/BENCHMARKS.md, "The daemon"):

1. idle RSS and CPU of a daemon with a year of daily history for 20 sources,
2. response time of /metrics, the API status and the dashboard's pages on that history,
3. schedule accuracy: how late a job every minute starts after its time.

The history is a journal this script writes (the daemon folds it at start, as it would its
own), so the figures are those of a daemon that has run for a year; the repository is a
real local one. Usage: bench/daemon-bench.py ARSIP_BIN OUT_DIR [--minutes N]
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

arsip, out = sys.argv[1], sys.argv[2]
minutes = int(sys.argv[sys.argv.index("--minutes") + 1]) if "--minutes" in sys.argv else 3
os.makedirs(out, exist_ok=True)
work = os.path.join(out, "site")
state = os.path.join(work, "state")
os.makedirs(os.path.join(state, "journal"), exist_ok=True)
os.makedirs(os.path.join(work, "data"), exist_ok=True)
open(os.path.join(work, "data", "f"), "w").write("x\n")
env = dict(os.environ, ARSIP_REPO=os.path.join(work, "repo"), ARSIP_PASSWORD="bench-password")
env.pop("ARSIP_TEST_WEAK_KDF", None)
if not os.path.exists(os.path.join(work, "repo")):
    subprocess.run([arsip, "init"], env=env, check=True, capture_output=True)
    subprocess.run([arsip, "key", "add", "--keyfile", "--out", os.path.join(work, "full.key")],
                   env=env, check=True, capture_output=True)
token = os.path.join(work, "token")
if not os.path.exists(token):
    subprocess.run([arsip, "token", "generate", token], check=True, capture_output=True)
tok = open(token).read().strip()

N, DAYS = 20, 365
cfg = ["version = 1", "[daemon]", f'state_dir = "{state}"', 'time_zone = "Asia/Jakarta"',
       "[api]", 'listen = "127.0.0.1:0"',
       f'tokens = [{{ name = "bench", role = "read", file = "{token}" }}]',
       "[repository.main]", f'location = "{work}/repo"', f'key_file = "{work}/full.key"',
       'price = { per_gb_month = 0.025, per_1000_writes = 0.005, per_1000_reads = 0.0004, currency = "USD" }']
for i in range(N):
    cfg += [f"[source.tenant-{i:02}]", 'kind = "files"', 'repository = "main"',
            f'paths = ["{work}/data"]', 'rpo = "26h"',
            f"[job.tenant-{i:02}-daily]", 'type = "backup"', f'source = "tenant-{i:02}"',
            'schedule = "0 2 * * *"']
# The schedule-accuracy probe (second run only): a job every minute.
probe = ["[source.probe]", 'kind = "files"', 'repository = "main"', f'paths = ["{work}/data"]',
         'rpo = "1h"', "[job.probe]", 'type = "backup"', 'source = "probe"', 'schedule = "* * * * *"']
config = os.path.join(work, "arsip.toml")


def write_config(with_probe):
    open(config, "w").write("\n".join(cfg + (probe if with_probe else [])) + "\n")
    os.chmod(config, 0o600)

# A year of daily runs, ending with the newest 02:00 WIB (19:00 UTC) occurrence.
now = datetime.now(timezone.utc)
last = now.replace(hour=19, minute=0, second=0, microsecond=0)
if last > now:
    last -= timedelta(days=1)
ts = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
rnd = random.Random(7)
lines = [json.dumps({"at": ts(last - timedelta(days=DAYS, hours=1)), "kind": "config_loaded",
                     "path": config, "sources": [f"tenant-{i:02}" for i in range(N)] + ["probe"]})]
for d in range(DAYS, -1, -1):
    t = last - timedelta(days=d)
    for i in range(N):
        job = f"tenant-{i:02}-daily"
        ok = rnd.random() > 0.02
        size = int(2e9 * (1 + i / 10) * (1 + (DAYS - d) / 800) * rnd.uniform(0.97, 1.03))
        secs = 300 * (1 + i / 10) * rnd.uniform(0.8, 1.2)
        end = t + timedelta(seconds=secs)
        facts = {"logical_bytes": size, "added_bytes": size // 50, "stored_bytes": size // 70,
                 "files": 1, "seconds": round(secs, 2),
                 "requests": {"put": 40, "get": 12, "head": 1, "list": 6, "delete": 0, "failed": 0,
                              "uploaded_bytes": size // 70, "downloaded_bytes": 1 << 20}} if ok else {}
        lines.append(json.dumps({"at": ts(t), "kind": "attempt_started", "job": job, "scheduled": ts(t), "attempt": 1}))
        e = {"at": ts(end), "kind": "attempt_finished", "job": job, "scheduled": ts(t), "attempt": 1,
             "outcome": "ok" if ok else "failed", "transient": False}
        if facts:
            e["facts"] = facts
        else:
            e["message"] = "pg_dump: connection refused"
        lines.append(json.dumps(e))
        lines.append(json.dumps({"at": ts(end), "kind": "run_finished", "job": job, "scheduled": ts(t),
                                 "outcome": "ok" if ok else "failed"}))
journal = os.path.join(state, "journal", f"{0:016}.jsonl")
open(journal, "w").write("\n".join(lines) + "\n")
print(f"journal: {len(lines)} entries, {os.path.getsize(journal) / 1e6:.1f} MB", flush=True)

log = open(os.path.join(out, "serve.log"), "w")
addr_file = os.path.join(state, "api-address")


def serve(with_probe):
    write_config(with_probe)
    if os.path.exists(addr_file):
        os.remove(addr_file)
    t0 = time.perf_counter()
    p = subprocess.Popen([arsip, "serve", "--config", config], env=dict(env, ARSIP_LOG="info"),
                         stdout=log, stderr=log)
    for _ in range(600):
        if os.path.exists(addr_file):
            break
        time.sleep(0.05)
    return p, open(addr_file).read().strip(), time.perf_counter() - t0


def get(base, path):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {tok}"})
    t0 = time.perf_counter()
    body = urllib.request.urlopen(req).read()
    return time.perf_counter() - t0, len(body)


def proc(p):
    with open(f"/proc/{p.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = next(int(l.split()[1]) for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS"))
    return ticks / os.sysconf("SC_CLK_TCK"), rss / 1024


def stamp(s):
    s = s.rstrip("Z")
    whole, _, frac = s.partition(".")
    return datetime.fromisoformat(whole + ("." + frac[:6].ljust(6, "0") if frac else "")).replace(tzinfo=timezone.utc)


results = {}
# Run 1: the daemon with the year of history and nothing due: idle.
p, base, startup = serve(False)
results["startup_seconds"] = round(startup, 3)
_, rss_start = proc(p)
results["rss_mib_at_start"] = round(rss_start, 1)
# /health renders nothing: the machine's floor for one HTTP round trip to the daemon.
for path in ["/health", "/metrics", "/api/v1/status", "/", "/source/tenant-00", "/storage"]:
    get(base, path)  # warm
    samples = [get(base, path) for _ in range(50)]
    ms = sorted(x[0] * 1000 for x in samples)
    results[path] = {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(len(ms) * 0.95) - 1], 2),
                     "max_ms": round(ms[-1], 2), "bytes": samples[0][1]}
    print(path, results[path], flush=True)
cpu0, rss0 = proc(p)
t0 = time.time()
time.sleep(60 * minutes)
cpu1, rss1 = proc(p)
wall = time.time() - t0
results["rss_mib_after_requests"] = round(rss0, 1)
results["rss_mib_idle_end"] = round(rss1, 1)
results["idle_cpu_percent_of_a_core"] = round(100 * (cpu1 - cpu0) / wall, 4)
results["idle_seconds"] = round(wall)
p.terminate()
p.wait(timeout=60)
print(json.dumps(results), flush=True)

# Run 2: the same daemon with a job every minute: how late each start is.
started = datetime.now(timezone.utc)
p, base, _ = serve(True)
time.sleep(60 * minutes + 5)
p.terminate()
p.wait(timeout=60)
lates = []
for l in open(journal):
    e = json.loads(l)
    # Occurrences after the start only: one just before it is run at once (caught up), which
    # says nothing about accuracy.
    if e.get("kind") == "attempt_started" and e["job"] == "probe" and stamp(e["scheduled"]) > started:
        lates.append(round((stamp(e["at"]) - stamp(e["scheduled"])).total_seconds(), 3))
results["schedule_late_seconds"] = lates
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
print(json.dumps(results, indent=1))
