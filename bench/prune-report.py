#!/usr/bin/env python3
"""Helpers of bench/prune-compare.sh.

  prune-report.py row NAME TIMEFILE STATS_JSON REQUESTS_TSV KEYS_AFTER BUCKET
      one results row (TSV) for a measured step: wall seconds and peak RSS from
      `/usr/bin/time -v`, the server's request counts by method and response bytes, and the
      data objects (arsip packs under data/, restic packs under data/) the step read with GET
      and that still exist after it ("read, not repacked"), with their bytes.
  prune-report.py readall ENDPOINT BUCKET
      GET every object of BUCKET once (8 at a time): the floor for reading the repository
      through the same server.
  prune-report.py table RESULTS_DIR
      the Markdown table of rows.tsv (+ per-prefix GET bytes of each step).
"""
import collections
import concurrent.futures
import json
import os
import re
import sys
import urllib.parse
import urllib.request


def wall_rss(timefile):
    wall = rss = None
    for line in open(timefile):
        line = line.strip()
        if line.startswith("Elapsed (wall clock) time"):
            v = line.rsplit(": ", 1)[1]
            parts = [float(x) for x in v.split(":")]
            wall = 0.0
            for x in parts:
                wall = wall * 60 + x
        elif line.startswith("Maximum resident set size"):
            rss = int(line.rsplit(": ", 1)[1])
        elif line.startswith("Exit status"):
            status = int(line.rsplit(": ", 1)[1])
    return wall, rss, status


def prefix_of(path, bucket):
    # /bucket/repo/data/ab/cdef -> data
    parts = urllib.parse.unquote(path).lstrip("/").split("/")
    if len(parts) >= 3 and parts[0] == bucket:
        return parts[2]
    return "(bucket)"


def row(name, timefile, stats_json, requests_tsv, keys_after, bucket):
    wall, rss, status = wall_rss(timefile)
    stats = json.load(open(stats_json))
    kept = {}
    for line in open(keys_after):
        k, size = line.rstrip("\n").split("\t")
        kept[k] = int(size)
    read = collections.Counter()      # data object -> GET response bytes
    by_prefix = collections.Counter()  # prefix -> GET response bytes
    with open(requests_tsv) as f:
        next(f)
        for line in f:
            t, method, path, query, rng, st, reqb, respb = line.rstrip("\n").split("\t")
            if method != "GET" or "list-type" in query or not st.startswith("2"):
                if method == "GET" and "list-type" in query:
                    by_prefix["(list)"] += int(respb)
                continue
            p = prefix_of(path, bucket)
            by_prefix[p] += int(respb)
            if p == "data":
                key = urllib.parse.unquote(path).lstrip("/").split("/", 1)[1]
                read[key] += int(respb)
    kept_read = {k: b for k, b in read.items() if k in kept}
    methods = " ".join(f"{m}:{s['requests']}" for m, s in sorted(stats.items()))
    resp = sum(s["resp_bytes"] for s in stats.values())
    req = sum(s["req_bytes"] for s in stats.values())
    extra = json.dumps(dict(by_prefix), sort_keys=True, separators=(",", ":"))
    print("\t".join(str(x) for x in [name, f"{wall:.2f}", rss, methods, resp, req, len(read),
                                     len(kept_read), sum(kept_read.values()), status, extra]))


def readall(endpoint, bucket):
    keys, token = [], None
    while True:
        q = {"list-type": "2", "max-keys": "1000"}
        if token:
            q["continuation-token"] = token
        body = urllib.request.urlopen(f"{endpoint}/{bucket}?{urllib.parse.urlencode(q)}").read().decode()
        keys += [urllib.parse.unquote(k) for k in re.findall(r"<Key>([^<]*)</Key>", body)]
        m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
        if not m:
            break
        token = m.group(1)

    # moto does not check signatures but wants an access key to read a private object
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, "
                             "SignedHeaders=host, Signature=" + "0" * 64}

    def get(k):
        req = urllib.request.Request(f"{endpoint}/{bucket}/{urllib.parse.quote(k)}", headers=auth)
        with urllib.request.urlopen(req) as r:
            n = 0
            while True:
                b = r.read(1 << 20)
                if not b:
                    return n
                n += len(b)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        total = sum(ex.map(get, keys))
    print(json.dumps({"objects": len(keys), "bytes": total}))


def mib(b):
    return f"{int(b) / 1048576:,.1f}"


def table(res):
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(res, "rows.tsv"))][1:]
    print("| step | wall s | peak RSS MiB | requests by method | bytes read (responses) MiB | bytes written MiB | data objects read | of them kept (read, not repacked/deleted) | their MiB | exit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name, wall, rss, methods, resp, req, nread, nkept, bkept, status = r[:10]
        print(f"| {name} | {wall} | {int(rss) / 1024:.0f} | {methods} | {mib(resp)} | {mib(req)} | {nread} | {nkept} | {mib(bkept)} | {status} |")
    print()
    print("GET response bytes by prefix (MiB):")
    print()
    for r in rows:
        d = json.loads(r[10])
        print(f"- {r[0]}: " + ", ".join(f"{k} {mib(v)}" for k, v in sorted(d.items())))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "row":
        row(*sys.argv[2:8])
    elif cmd == "readall":
        readall(*sys.argv[2:4])
    elif cmd == "table":
        table(sys.argv[2])
