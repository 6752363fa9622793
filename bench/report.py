#!/usr/bin/env python3
"""Markdown results table from bench/run.sh's raw.tsv:  report.py RAW_TSV DUMP_BYTES CHANGED_BYTES"""
import csv, statistics, sys
raw, dump, changed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(raw), delimiter="\t"))
MiB = 1024 * 1024
def vals(tool, step, key):
    return [float(r[key]) for r in rows if r["tool"] == tool and r["step"] == step]
def med(tool, step, key):
    return statistics.median(vals(tool, step, key))
def spread(tool, step, key, f):
    # f maps a raw value to a display number; the range is shown low–high after mapping
    v = sorted(f(x) for x in vals(tool, step, key))
    m = f(med(tool, step, key))
    return f"{m:.1f}" + ("" if len(v) < 2 else f" ({v[0]:.1f}–{v[-1]:.1f})")
out = []
out.append(f"Input: {dump / MiB:.0f} MiB dump ({dump} bytes); changed dump {changed} bytes. "
           f"Runs: {len(vals('arsip', 'backup', 'seconds'))} per tool; median (min–max).\n")
out.append("| metric | arsip | restic 0.14 | arsip / restic | target | met? |")
out.append("|---|---|---|---|---|---|")
def thr(step, size):
    a = size / med("arsip", step, "seconds") / MiB
    r = size / med("restic", step, "seconds") / MiB
    fa = spread("arsip", step, "seconds", lambda s: size / s / MiB)
    fr = spread("restic", step, "seconds", lambda s: size / s / MiB)
    return a, r, fa, fr
def paired(step):
    # per run: restic seconds / arsip seconds of the same run (runs are interleaved)
    a = {r["run"]: float(r["seconds"]) for r in rows if r["tool"] == "arsip" and r["step"] == step}
    b = {r["run"]: float(r["seconds"]) for r in rows if r["tool"] == "restic" and r["step"] == step}
    return [b[k] / a[k] for k in sorted(a, key=int) if k in b]
def verdict(ratio, runs):
    if ratio >= 2 and min(runs) >= 2:
        return "yes"
    if ratio >= 2:
        return f"median yes; {sum(x < 2 for x in runs)} of {len(runs)} runs below"
    return "NO"
for step, label in [("backup", "backup throughput, MiB/s (first backup)"), ("restore", "restore throughput, MiB/s")]:
    a, r, fa, fr = thr(step, dump)
    runs = paired(step)
    out.append(f"| {label} | {fa} | {fr} | {a / r:.2f}× (per run: {', '.join(f'{x:.2f}' for x in runs)}) | ≥ 2.00× | {verdict(a / r, runs)} |")
for step, label in [("backup", "first backup"), ("restore", "restore"), ("backup-changed", "backup of changed dump"), ("backup-unchanged", "backup of unchanged dump")]:
    fa = spread("arsip", step, "seconds", lambda s: s)
    fr = spread("restic", step, "seconds", lambda s: s)
    out.append(f"| wall time, s: {label} | {fa} | {fr} | {med('arsip', step, 'seconds') / med('restic', step, 'seconds'):.2f}× | | |")
for step, label in [("backup", "first backup"), ("restore", "restore")]:
    cpu = lambda t: statistics.median([float(x["user_s"]) + float(x["sys_s"]) for x in rows if x["tool"] == t and x["step"] == step])
    out.append(f"| CPU time (user+sys), s: {label} | {cpu('arsip'):.1f} | {cpu('restic'):.1f} | {cpu('arsip') / cpu('restic'):.2f}× | | |")
a = med("arsip", "backup", "new_bytes"); r = med("restic", "backup", "new_bytes")
out.append(f"| stored after first backup, MiB (% of input) | {a / MiB:.0f} ({100 * a / dump:.1f}%) | {r / MiB:.0f} ({100 * r / dump:.1f}%) | {a / r:.2f}× | | |")
a = med("arsip", "backup-changed", "new_bytes"); r = med("restic", "backup-changed", "new_bytes")
out.append(f"| new bytes, backup of changed dump, MiB (% of input) | {a / MiB:.1f} ({100 * a / changed:.2f}%) | {r / MiB:.1f} ({100 * r / changed:.2f}%) | {a / r:.2f}× | | |")
a = med("arsip", "backup-unchanged", "new_bytes"); r = med("restic", "backup-unchanged", "new_bytes")
out.append(f"| new bytes, backup of unchanged dump, KiB (% of input) | {a / 1024:.1f} ({100 * a / dump:.4f}%) | {r / 1024:.1f} ({100 * r / dump:.4f}%) | {a / max(r, 1):.2f}× | < 1% | {'yes' if a / dump < 0.01 else 'NO'} |")
a = max(max(vals("arsip", s, "max_rss_kib")) for s in ("backup", "restore", "backup-changed", "backup-unchanged"))
r = max(max(vals("restic", s, "max_rss_kib")) for s in ("backup", "restore", "backup-changed", "backup-unchanged"))
out.append(f"| peak RSS, MiB (max over all steps and runs) | {a / 1024:.0f} | {r / 1024:.0f} | {a / r:.2f}× | < 256 MiB | {'yes' if a / 1024 < 256 else 'NO'} |")
for step in ("backup", "restore", "backup-changed", "backup-unchanged"):
    out.append(f"| peak RSS, MiB: {step} | {max(vals('arsip', step, 'max_rss_kib')) / 1024:.0f} | {max(vals('restic', step, 'max_rss_kib')) / 1024:.0f} | | | |")
print("\n".join(out))
