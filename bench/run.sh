#!/usr/bin/env bash
# arsip vs restic on the same pg_dump, in one run, on this machine.
#
#   bench/run.sh
#
# Environment:
#   BENCH_DIR=/var/tmp/arsip-bench   where datasets, repositories and results live
#   RUNS=3                           repetitions of the whole sequence per tool (interleaved:
#                                    arsip, restic, arsip, restic, ...); medians are reported
#   VEHICLES=1000000                 dataset size (see make-dataset.sh); default ~2 GiB dump
#   BUILD=1                          0 skips `cargo build --release`
#   WAIT_IDLE=0                      seconds to wait (at most) for the 1-minute load average to
#                                    fall below 1.0 before measuring
#
# Per tool and run: a fresh local repository and a fresh cache directory, then
#   1. backup of dump.pgc from stdin                   -> time, peak RSS, stored bytes
#   2. restore of that snapshot to a file              -> time, peak RSS, sha256 compared
#   3. backup of dump.changed.pgc (a day of churn)     -> time, peak RSS, new stored bytes
#   4. backup of dump.pgc again (unchanged input)      -> time, peak RSS, new stored bytes
# Stored bytes are `du -sb` of the repository directory (apparent size, i.e. what an object
# store would bill). Times and peak RSS come from `/usr/bin/time -f '%e %M %U %S'`.
# The page cache cannot be dropped in every sandbox, so every input is read once before it is
# timed and both tools read it from the page cache; the disk's own rate is measured separately
# with O_DIRECT. Passwords are passed in ARSIP_PASSWORD / RESTIC_PASSWORD, never in argv.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/arsip-bench}
RUNS=${RUNS:-3}
BUILD=${BUILD:-1}
WAIT_IDLE=${WAIT_IDLE:-0}
DUMP=$BENCH_DIR/dataset/dump.pgc
CHANGED=$BENCH_DIR/dataset/dump.changed.pgc
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$BENCH_DIR/run-$STAMP
RESULTS=$BENCH_DIR/results-$STAMP
ARSIP=$ROOT/target/release/arsip

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---- tools ---------------------------------------------------------------------------------
need_pkgs=()
command -v restic >/dev/null || need_pkgs+=(restic)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v zstd >/dev/null || need_pkgs+=(zstd)
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [[ $BUILD == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --bin arsip)
fi
[[ -x $ARSIP ]] || { echo "no $ARSIP" >&2; exit 1; }

"$HERE/make-dataset.sh" "$DUMP" "$CHANGED"

mkdir -p "$WORK" "$RESULTS"
RAW=$RESULTS/raw.tsv
printf 'tool\trun\tstep\tseconds\tmax_rss_kib\tuser_s\tsys_s\trepo_bytes_after\tnew_bytes\n' > "$RAW"

if ((WAIT_IDLE > 0)); then
    deadline=$((SECONDS + WAIT_IDLE))
    while (( $(awk '{print ($1 < 1.0) ? 0 : 1}' /proc/loadavg) )) && ((SECONDS < deadline)); do sleep 10; done
fi

# ---- machine -------------------------------------------------------------------------------
DUMP_BYTES=$(stat -c %s "$DUMP")
CHANGED_BYTES=$(stat -c %s "$CHANGED")
{
    echo "date_utc: $STAMP"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "mem_total: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "filesystem: $(df -T "$BENCH_DIR" | awk 'NR==2 {print $1, $2}')"
    echo "arsip: $("$ARSIP" --version) (git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || echo ', with uncommitted changes in crates/'))"
    echo "restic: $(restic version)"
    echo "zstd: $(zstd --version)"
    echo "pg_dump: $(/usr/lib/postgresql/15/bin/pg_dump --version)"
    echo "dump: $DUMP_BYTES bytes, changed dump: $CHANGED_BYTES bytes"
    echo "load_before: $(cat /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

# ---- machine limits ------------------------------------------------------------------------
dd_rate() { # prints MB/s (decimal, as dd does) of the last dd status line
    LC_ALL=C dd "$@" of=/dev/null bs=4M 2>&1 | awk '/copied/ {print $(NF-1), $NF}'
}
log "disk read rate (O_DIRECT)"
if DIRECT=$(dd_rate if="$DUMP" iflag=direct) && [[ -n $DIRECT ]]; then :; else DIRECT="n/a (iflag=direct unsupported)"; fi
cat "$DUMP" "$CHANGED" > /dev/null
CACHED=$(dd_rate if="$DUMP")
log "zstd -b1 -e3 (one core)"
zstd -q -b1 -e3 -T1 -i3 "$DUMP" > "$RESULTS/zstd.txt" 2>&1 || true
# lines: "-LEVEL  compressed_bytes (ratio) COMPRESS MB/s  DECOMPRESS MB/s  name"
zstd_fmt() { awk -v l="-$1" '$1 == l {gsub(/[()]/, "", $3); print "ratio " $3 ", compress " $4 " " $5 ", decompress " $6 " " $7}' "$RESULTS/zstd.txt" | tail -1; }
{
    echo "disk read of the dump, O_DIRECT (dd bs=4M iflag=direct): $DIRECT"
    echo "page-cache read of the dump (dd bs=4M): $CACHED"
    for l in 1 2 3; do echo "zstd -$l, one core (zstd -b): $(zstd_fmt $l)"; done
} | tee "$RESULTS/limits.txt" >&2

# ---- the tools -----------------------------------------------------------------------------
export ARSIP_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
export GOMAXPROCS=$(nproc)

t_run() { # t_run TOOL RUN STEP NEWBASE_REPO_BYTES -- cmd... ; stdin/stdout redirected by caller
    local tool=$1 run=$2 step=$3 repo=$4; shift 5
    local before after tf=$WORK/time.$$
    before=$(du -sb "$repo" | cut -f1)
    sync
    /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@"
    sync
    after=$(du -sb "$repo" | cut -f1)
    read -r e m u s < "$tf"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$step" "$e" "$m" "$u" "$s" "$after" $((after - before)) >> "$RAW"
    log "$tool run $run $step: ${e}s, ${m} KiB peak RSS, +$((after - before)) bytes"
}

DUMP_SHA=$(sha256sum < "$DUMP" | cut -d' ' -f1)
bench_arsip() {
    local run=$1 repo=$WORK/arsip-repo-$1 out=$WORK/restore.out
    export ARSIP_REPO=$repo XDG_CACHE_HOME=$WORK/arsip-cache-$1
    rm -rf "$repo" "$XDG_CACHE_HOME"
    "$ARSIP" -q init > /dev/null
    cat "$DUMP" > /dev/null
    t_run arsip "$run" backup "$repo" -- "$ARSIP" -q backup stdin --name dump.pgc < "$DUMP" >> "$WORK/arsip.log"
    t_run arsip "$run" restore "$repo" -- "$ARSIP" -q restore latest --stdout > "$out"
    [[ $(sha256sum < "$out" | cut -d' ' -f1) == "$DUMP_SHA" ]] || { echo "arsip restore differs" >&2; exit 1; }
    rm -f "$out"
    cat "$CHANGED" > /dev/null
    t_run arsip "$run" backup-changed "$repo" -- "$ARSIP" -q backup stdin --name dump.pgc < "$CHANGED" >> "$WORK/arsip.log"
    cat "$DUMP" > /dev/null
    t_run arsip "$run" backup-unchanged "$repo" -- "$ARSIP" -q backup stdin --name dump.pgc < "$DUMP" >> "$WORK/arsip.log"
    "$ARSIP" --json stats > "$RESULTS/arsip-stats-$run.json"
    unset ARSIP_REPO XDG_CACHE_HOME
}
bench_restic() {
    local run=$1 repo=$WORK/restic-repo-$1 out=$WORK/restore.out
    export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$WORK/restic-cache-$1
    rm -rf "$repo" "$RESTIC_CACHE_DIR"
    restic -q init --repository-version 2 > /dev/null
    cat "$DUMP" > /dev/null
    t_run restic "$run" backup "$repo" -- restic -q backup --stdin --stdin-filename dump.pgc < "$DUMP"
    t_run restic "$run" restore "$repo" -- restic -q dump latest /dump.pgc > "$out"
    [[ $(sha256sum < "$out" | cut -d' ' -f1) == "$DUMP_SHA" ]] || { echo "restic restore differs" >&2; exit 1; }
    rm -f "$out"
    cat "$CHANGED" > /dev/null
    t_run restic "$run" backup-changed "$repo" -- restic -q backup --stdin --stdin-filename dump.pgc < "$CHANGED"
    cat "$DUMP" > /dev/null
    t_run restic "$run" backup-unchanged "$repo" -- restic -q backup --stdin --stdin-filename dump.pgc < "$DUMP"
    restic --json stats --mode raw-data > "$RESULTS/restic-stats-$run.json"
    unset RESTIC_REPOSITORY RESTIC_CACHE_DIR
}

for ((r = 1; r <= RUNS; r++)); do
    echo "load_run_$r: $(cat /proc/loadavg)" >> "$RESULTS/machine.txt"
    bench_arsip "$r"
    bench_restic "$r"
    # keep the last run's repositories for inspection, drop older ones
    ((r < RUNS)) && rm -rf "$WORK/arsip-repo-$r" "$WORK/restic-repo-$r"
done
echo "load_after: $(cat /proc/loadavg)" >> "$RESULTS/machine.txt"

# ---- report --------------------------------------------------------------------------------
python3 "$HERE/report.py" "$RAW" "$DUMP_BYTES" "$CHANGED_BYTES" > "$RESULTS/table.md"
{
    echo
    echo "Machine limits (same input):"
    echo
    echo "| limit | figure |"
    echo "|---|---|"
    sed -E 's/^([^:]+): (.*)$/| \1 | \2 |/' "$RESULTS/limits.txt"
} >> "$RESULTS/table.md"
cat "$RESULTS/table.md"
log "results in $RESULTS (raw.tsv, machine.txt, limits.txt, table.md); repositories of the last run in $WORK"
