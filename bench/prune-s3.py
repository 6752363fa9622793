#!/usr/bin/env python3
"""moto's S3 server (in-process) for bench/prune-compare.sh, with three additions:

1. A settable clock. Every time moto stamps an object (`Last-Modified`) comes from
   real UTC now + an offset in seconds read from CLOCK_FILE (re-read when the file changes),
   so a 30-day repository can be written in an hour with store times one day apart, while
   time still runs inside each simulated day. (The same effect as running moto under
   libfaketime, without preloading a time library into CPython.)
2. Request accounting on the server side: every S3 request is counted by method (count,
   request body bytes, response body bytes) and, while a log is open, one line is written
   per request (method, path, query, Range header, status, bytes). Controlled through
   /__bench/... paths that never reach moto:
     GET /__bench/reset?log=PATH   zero the counters, log requests to PATH (empty: no log)
     GET /__bench/stats            the counters as JSON
3. Save and load of the whole store with each object's Last-Modified, so that the
   30-day repositories can be measured again later on the same data:
     GET /__bench/save?dir=DIR     write every bucket's objects to DIR (manifest.jsonl + files)
     GET /__bench/load?dir=DIR     create the buckets and objects of DIR, Last-Modified kept
     GET /__bench/sizes            bytes stored per bucket (JSON);  /__bench/keys?bucket=B  key<TAB>size lines
     GET /__bench/now              the server's simulated time

Usage: prune-s3.py PORT CLOCK_FILE   (run with moto's venv python)
Objects over MOTO_S3_DEFAULT_KEY_BUFFER_SIZE (moto default ~5 MiB) live in temporary files
under TMPDIR, smaller ones in memory.
"""
import datetime
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse

from werkzeug.serving import run_simple

import moto.s3.models as s3models
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

PORT = int(sys.argv[1])
CLOCK_FILE = sys.argv[2]

_clock = {"mtime": None, "offset": 0.0}
_real_utcnow = s3models.utcnow


def offset() -> float:
    try:
        st = os.stat(CLOCK_FILE)
    except FileNotFoundError:
        return 0.0
    if st.st_mtime_ns != _clock["mtime"]:
        with open(CLOCK_FILE) as f:
            txt = f.read().strip()
        _clock["offset"] = float(txt or 0)
        _clock["mtime"] = st.st_mtime_ns
    return _clock["offset"]


def fake_utcnow() -> datetime.datetime:
    return _real_utcnow() + datetime.timedelta(seconds=offset())


s3models.utcnow = fake_utcnow

_lock = threading.Lock()
_stats: dict = {}
_log = {"f": None}


def reset(log_path: str) -> None:
    with _lock:
        _stats.clear()
        if _log["f"]:
            _log["f"].close()
        _log["f"] = open(log_path, "w", buffering=1) if log_path else None
        if _log["f"]:
            _log["f"].write("t\tmethod\tpath\tquery\trange\tstatus\treq_bytes\tresp_bytes\n")


def account(method, path, query, rng, status, req_bytes, resp_bytes) -> None:
    with _lock:
        s = _stats.setdefault(method, {"requests": 0, "req_bytes": 0, "resp_bytes": 0})
        s["requests"] += 1
        s["req_bytes"] += req_bytes
        s["resp_bytes"] += resp_bytes
        if _log["f"]:
            _log["f"].write(
                f"{time.time():.3f}\t{method}\t{path}\t{query}\t{rng}\t{status}\t{req_bytes}\t{resp_bytes}\n"
            )


def backend_of(bucket: str):
    partition, acct = s3models.s3_backends.bucket_accounts[bucket]
    return s3models.s3_backends[acct][partition]


def all_buckets():
    for bucket in sorted(s3models.s3_backends.bucket_accounts):
        yield bucket, backend_of(bucket).get_bucket(bucket)


def save(d: str) -> dict:
    os.makedirs(os.path.join(d, "objects"), exist_ok=True)
    n = total = 0
    with open(os.path.join(d, "manifest.jsonl"), "w") as m:
        for bname, b in all_buckets():
            m.write(json.dumps({"bucket": bname}) + "\n")
            for kname in sorted(b.keys.keys()):
                key = b.keys[kname]  # the current version
                if key is None or isinstance(key, s3models.FakeDeleteMarker):
                    continue
                data = key.value
                fn = f"{n:07d}"
                with open(os.path.join(d, "objects", fn), "wb") as f:
                    f.write(data)
                m.write(json.dumps({"bucket": bname, "key": kname, "file": fn, "size": len(data),
                                    "last_modified": key.last_modified.isoformat(),
                                    "md5": hashlib.md5(data).hexdigest()}) + "\n")
                n += 1
                total += len(data)
    return {"objects": n, "bytes": total}


def load(d: str, app) -> dict:
    n = total = 0
    with open(os.path.join(d, "manifest.jsonl")) as m:
        for line in m:
            e = json.loads(line)
            if "key" not in e:
                if e["bucket"] not in s3models.s3_backends.bucket_accounts:
                    s3models.s3_backends["123456789012"]["aws"].create_bucket(e["bucket"], "us-east-1")
                continue
            with open(os.path.join(d, "objects", e["file"]), "rb") as f:
                data = f.read()
            # the ETag too: moto otherwise hashes every loaded object on its first listing
            key = backend_of(e["bucket"]).put_object(e["bucket"], e["key"], data, etag=e["md5"])
            key.last_modified = datetime.datetime.fromisoformat(e["last_modified"])
            n += 1
            total += len(data)
    return {"objects": n, "bytes": total}


def control(environ, start_response, moto_app):
    path = environ["PATH_INFO"]
    q = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    if path == "/__bench/reset":
        reset(q.get("log", ""))
        out = {"ok": True}
    elif path == "/__bench/stats":
        with _lock:
            out = json.loads(json.dumps(_stats))
    elif path == "/__bench/save":
        out = save(q["dir"])
    elif path == "/__bench/load":
        out = load(q["dir"], moto_app)
    elif path == "/__bench/sizes":
        out = {}
        for bname, b in all_buckets():
            out[bname] = sum(k.size for k in b.keys.values()
                             if k is not None and not isinstance(k, s3models.FakeDeleteMarker))
        body = (json.dumps(out, separators=(",", ":")) + "\n").encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    elif path == "/__bench/keys":
        b = backend_of(q["bucket"]).get_bucket(q["bucket"])
        lines = [f"{k}\t{v.size}\n" for k, v in sorted(b.keys.items())
                 if v is not None and not isinstance(v, s3models.FakeDeleteMarker)]
        body = "".join(lines).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    elif path == "/__bench/now":
        out = {"now": fake_utcnow().isoformat() + "Z", "offset": offset()}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"unknown bench path\n"]
    body = (json.dumps(out) + "\n").encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


moto_app = DomainDispatcherApplication(create_backend_app)


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/__bench/"):
        return control(environ, start_response, moto_app)
    status_box = {}

    def sr(status, headers, exc_info=None):
        status_box["s"] = status.split(" ", 1)[0]
        return start_response(status, headers, exc_info)

    method = environ["REQUEST_METHOD"]
    req_bytes = int(environ.get("CONTENT_LENGTH") or 0)
    result = moto_app(environ, sr)

    def counted():
        sent = 0
        try:
            for chunk in result:
                sent += len(chunk)
                yield chunk
        finally:
            if hasattr(result, "close"):
                result.close()
            account(method, environ["PATH_INFO"], environ.get("QUERY_STRING", ""),
                    environ.get("HTTP_RANGE", ""), status_box.get("s", "?"), req_bytes, sent)

    return counted()


if __name__ == "__main__":
    run_simple("127.0.0.1", PORT, app, threaded=True, request_handler=MotoRequestHandler)
