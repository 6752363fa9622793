#!/usr/bin/env bash
# Forget + prune of a 30-day repository, arsip against restic, on one S3 server, one run
# (issue 11 §8). docs/BENCHMARKS.md "Forget + prune of a 30-day repository" has the results.
#
#   bench/prune-compare.sh                 # everything: cluster, DAYS daily backups, save, measure
#   bench/prune-compare.sh --build-only    # cluster, daily backups, save the pristine store
#   bench/prune-compare.sh --measure-only  # load the pristine store (and PGDATA), measure again
#   bench/prune-compare.sh --cluster-only  # only the cluster with the dataset (build does it too)
#   bench/prune-compare.sh --drop-dumps    # remove the like-for-like arsip repository from the pristine copy
#   bench/prune-compare.sh --stop          # stop the cluster and the S3 server
#
# Environment:
#   W=/work/bench-data/prune      everything lives here (cluster, S3 temp files, pristine copy, results)
#   ARSIP_BIN=…                   the arsip binary; it must be a `--features test-hooks` build
#                                 (default /work/wt-bench/target/release/arsip)
#   DAYS=31                       daily backups (days 0 … DAYS-1), one simulated day apart; the
#                                 first measured forget drops day 0 and keeps 30 days
#   VEHICLES=400000               dataset size (bench/make-dataset.sh; a 1.0 GiB database on day 0)
#   KEEP=30d                      arsip forget --keep-within
#   PITR=7d                       arsip prune --pitr-window
#   RESTIC_KEEP='--keep-last 30'  restic's rule (the same 30 days as arsip's --keep-within 30d
#                                 at one hour after the last daily backup)
#   NEXT_DAY=1                    after the first measured prune, one more day of backups and a
#                                 second forget+prune of each tool (a daily prune in steady state)
#   COLD=1                        also run the first forget+prune with empty caches (after the warm one,
#                                 from the pristine store again)
#   CRED=password                 how arsip's forget --prune opens each repository: the password
#                                 (Argon2id, as restic's password goes through scrypt), or
#                                 `keyfile`: a full key file, as scheduled maintenance runs
#                                 (docs/CONFIG.md `key_file`), which derives no key
#
# The store: moto (the S3-protocol server the tests use) run in-process by bench/prune-s3.py,
# which stamps Last-Modified from a settable clock (real time + an offset in $W/clock), counts
# every request by method on the server side, and saves/loads the whole store with each
# object's Last-Modified ($W/pristine). One arsip repository holds what a database host backs
# up daily: a physical backup (`backup pg --physical`), the WAL archived by `archive_command`
# (`arsip wal push`), and a logical backup (`backup pg --logical`). The same day's
# `pg_dump -Fc -Z0` file goes to restic (`backup --stdin --time DAY`) and, for a like-for-like
# figure, to a second arsip repository (`backup stdin`). restic has no physical backup or WAL.
#
# arsip's clock: ARSIP_TEST_NOW (test-hooks builds only) is set on every arsip command to
# real time + the same offset, so the writer's clock and the store's stay within seconds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PGBIN=/usr/lib/postgresql/15/bin
W=${W:-/work/bench-data/prune}
ARSIP=$(realpath "${ARSIP_BIN:-/work/wt-bench/target/release/arsip}")
DAYS=${DAYS:-31}
VEHICLES=${VEHICLES:-400000}
KEEP=${KEEP:-30d}
PITR=${PITR:-7d}
# restic's --keep-within counts from its newest snapshot, not from now, and cuts exactly at the
# boundary; with one backup a day, keeping the last 30 keeps the same days as arsip's 30d
RESTIC_KEEP=${RESTIC_KEEP:---keep-last 30}
NEXT_DAY=${NEXT_DAY:-1}
COLD=${COLD:-1}
CRED=${CRED:-password}
MOTO_PY=${MOTO_PY:-$HOME/.cache/arsip-tools/moto-venv/bin/python}
S3PORT=${S3PORT:-18601}
PGPORT_=${PGPORT_:-5497}
BASE_EPOCH=$(date -u -d "${BASE:-2026-10-01T02:00:00Z}" +%s)   # day 0, 02:00 UTC
DUMP=$W/dataset/dump.pgc
PGDATA=$W/pg/data
S3=http://127.0.0.1:$S3PORT
ARSIP_FULL=s3://arsip-full/repo
ARSIP_DUMPS=s3://arsip-dumps/repo
RESTIC_REPO=s3:$S3/restic/repo

log() { printf '[prune-compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }
psql_() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$W/pg" -p "$PGPORT_" -U postgres "$@"; }

# ---- secrets: files only, never argv --------------------------------------------------------
secrets() {
    mkdir -p "$W/secrets"; chmod 711 "$W/secrets"
    [[ -s $W/secrets/arsip.pass ]] || head -c 24 /dev/urandom | base64 > "$W/secrets/arsip.pass"
    [[ -s $W/secrets/restic.pass ]] || head -c 24 /dev/urandom | base64 > "$W/secrets/restic.pass"
    # moto accepts any key pair; the pair still travels in the environment only
    printf 'export AWS_ACCESS_KEY_ID=bench\nexport AWS_SECRET_ACCESS_KEY=bench-secret-%s\n' \
        "$(head -c 9 /dev/urandom | base64 | tr '+/' 'xy')" > "$W/secrets/aws.env.new"
    [[ -s $W/secrets/aws.env ]] || mv "$W/secrets/aws.env.new" "$W/secrets/aws.env"
    rm -f "$W/secrets/aws.env.new"
    chmod 600 "$W"/secrets/*
}
load_env() {
    # shellcheck disable=SC1091
    source "$W/secrets/aws.env"
    export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
    export ARSIP_S3_ENDPOINT=$S3 ARSIP_S3_REGION=us-east-1
    export ARSIP_PASSWORD_FILE=$W/secrets/arsip.pass RESTIC_PASSWORD_FILE=$W/secrets/restic.pass
    export PGHOST=$W/pg PGPORT=$PGPORT_ PGUSER=postgres
    export GOMAXPROCS=$(nproc)
    unset ARSIP_PASSWORD RESTIC_PASSWORD ARSIP_TEST_WEAK_KDF
}

# ---- the clock ------------------------------------------------------------------------------
# set_day D: the simulated time becomes day D, 02:00 UTC, from now on (and runs on in real time)
set_day() {
    local now; now=$(date +%s)
    echo $((BASE_EPOCH + $1 * 86400 - now)) > "$W/clock.new" && mv "$W/clock.new" "$W/clock"
}
fake_epoch() { echo $(( $(date +%s) + $(cat "$W/clock") )); }
fake_now() { date -u -d "@$(fake_epoch)" +%Y-%m-%dT%H:%M:%SZ; }
# arsip_ REPO-LOCATION CACHE ARGS...: arsip as root on that repository, its clock in step
arsip_() {
    local repo=$1 cache=$2; shift 2
    ARSIP_TEST_NOW=$(fake_now) ARSIP_REPO=$repo ARSIP_CACHE_DIR=$cache "$ARSIP" "$@"
}
restic_() { RESTIC_CACHE_DIR=$W/cache/restic restic -r "$RESTIC_REPO" "$@"; }

# ---- the S3 server --------------------------------------------------------------------------
s3_start() {
    s3_stop
    mkdir -p "$W/s3tmp"
    rm -rf "$W/s3tmp"/*
    [[ -f $W/clock ]] || echo 0 > "$W/clock"
    TMPDIR=$W/s3tmp setsid "$MOTO_PY" "$HERE/prune-s3.py" "$S3PORT" "$W/clock" > "$W/s3.log" 2>&1 < /dev/null &
    echo $! > "$W/s3.pid"
    for _ in $(seq 100); do curl -sf "$S3/__bench/now" >/dev/null && return 0; sleep 0.2; done
    log "S3 server did not start ($W/s3.log)"; exit 1
}
s3_stop() {
    if [[ -f $W/s3.pid ]]; then
        local pid; pid=$(cat "$W/s3.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 300); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
        rm -f "$W/s3.pid"
    fi
}
s3_rss() { awk '/VmRSS/ {print $2}' "/proc/$(cat "$W/s3.pid")/status"; }
bench_() { curl -sf "$S3/__bench/$1"; }

# ---- PostgreSQL -----------------------------------------------------------------------------
pg_start() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$W/pg/server.log" start >/dev/null; }
pg_stop() { [[ -f $PGDATA/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true; }
set_archive() { psql_ -d postgres -c "alter system set archive_command = '$1'" -c 'select pg_reload_conf()' >/dev/null; }

setup_cluster() {
    if [[ -f $W/pg/ready && -z ${FRESH:-} ]]; then
        log "cluster $PGDATA exists (FRESH=1 rebuilds it)"
        [[ -f $PGDATA/postmaster.pid ]] || pg_start
        set_archive true
        return
    fi
    VEHICLES=$VEHICLES "$HERE/make-dataset.sh" "$DUMP"
    pg_stop; rm -rf "$W/pg"; mkdir -p "$W/pg"; chmod 755 "$W" "$W/pg"; chown postgres: "$W/pg"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$W/pg'
port = $PGPORT_
wal_level = replica
archive_mode = on
archive_command = 'true'
max_wal_size = 2GB
shared_buffers = 256MB
maintenance_work_mem = 256MB
autovacuum = off
CONF
    pg_start
    psql_ -d postgres -c 'create database dealer'
    log "pg_restore $DUMP"
    as_pg "$PGBIN/pg_restore" -h "$W/pg" -p "$PGPORT_" -U postgres -d dealer -j 2 "$DUMP" < /dev/null
    # rows arrive in id order in a live table; make-dataset.sh's GROUP BY does not keep it
    psql_ -d dealer -c 'cluster vehicles using vehicles_pkey' -c 'cluster photos using photos_pkey' \
          -c 'cluster leads using leads_pkey' -c 'vacuum analyze' -c 'checkpoint'
    touch "$W/pg/ready"
    psql_ -d postgres -Atc "select 'database dealer: ' || pg_size_pretty(pg_database_size('dealer'))" | tee "$W/db-size-day0.txt"
}

# The WAL archiver: `arsip wal push` as postgres with the full key file, clock in step.
write_walpush() {
    install -d -o postgres -g postgres "$W/cache/walpush"
    cp "$W/secrets/aws.env" "$W/secrets/aws-pg.env"; chown postgres: "$W/secrets/aws-pg.env"
    cat > "$W/walpush.sh" <<SH
#!/bin/sh
# archive_command: arsip wal push, with the simulated clock
. $W/secrets/aws-pg.env
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true ARSIP_S3_ENDPOINT=$S3 ARSIP_S3_REGION=us-east-1
export ARSIP_REPO=$ARSIP_FULL ARSIP_KEY_FILE=$W/secrets/arsip-full.key ARSIP_CACHE_DIR=$W/cache/walpush
export ARSIP_TEST_NOW=\$(date -u -d "@\$(( \$(date +%s) + \$(cat $W/clock) ))" +%Y-%m-%dT%H:%M:%SZ)
exec $ARSIP -q wal push "\$1"
SH
    chmod 755 "$W/walpush.sh"
}

# One simulated day of churn, the same SQL as bench/pg-compare.sh's churn_day: in vehicles,
# photos and leads 1% of rows updated and 0.2% of vehicles deleted among the newest 3%, 0.5%
# new vehicles (with photos) and leads, 1% of tenants change settings; then a pgbench-style
# burst of small transactions (single-row updates of random recent vehicles and inserted leads).
churn_day() {
    psql_ -d dealer -v day="$1" <<'SQL'
select setseed(0.01 * (:day % 100)) \gset
begin;
select max(id) as vmax from vehicles \gset
select max(id) as pmax from photos \gset
select max(id) as lmax from leads \gset
update vehicles set price_idr = price_idr - 5000000 * (1 + floor(random() * 4)::int),
                    status = (array['available','reserved','sold'])[1 + floor(random()*3)::int],
                    updated_at = updated_at + :day * interval '1 day'
 where id > :vmax * 0.97 and id % 3 = :day % 3;
update photos set sha256 = encode(sha256(('re' || id || random())::bytea), 'hex')
 where id > :pmax * 0.97 and id % 3 = (:day + 1) % 3;
update leads set status = (array['contacted','test-drive','negotiation','won','lost'])[1 + floor(random()*5)::int]
 where id > :lmax * 0.97 and id % 3 = (:day + 2) % 3;
delete from vehicles where id > :vmax * 0.97 and id % 15 = :day % 15;
insert into vehicles
select :vmax + g, o.tenant_id, upper(substr(encode(sha256(('vin' || :day || g || random())::bytea), 'hex'), 1, 17)),
       make, model, year, price_idr + 1000000, floor(random() * 250000)::int, color, plate, 'draft', specs,
       description, o.created_at + :day * interval '1 day', o.updated_at + :day * interval '1 day'
from vehicles o join generate_series(1, (:vmax / 200)::int) g on o.id = 1 + (g * 7919 + :day) % :vmax;
insert into photos
select :pmax + row_number() over (order by v.id, k), v.tenant_id, v.id, k,
       'vehicles/' || v.tenant_id || '/' || v.id || '/photo-' || k || '.jpg',
       encode(sha256(('p' || :day || v.id || '-' || k || random())::bytea), 'hex'),
       80000 + floor(random() * 2400000)::int, 1920, 1080, 'image/jpeg', '{}'::jsonb, v.created_at
from vehicles v, generate_series(1, 1 + (v.id % 5)::int) k where v.id > :vmax;
insert into leads
select :lmax + g, o.tenant_id, o.vehicle_id, o.name, o.email, o.phone, o.message, o.source, 'new', o.utm,
       o.created_at + :day * interval '1 day'
from leads o join generate_series(1, (:lmax / 200)::int) g on o.id = 1 + (g * 104729 + :day) % :lmax
where o.vehicle_id is not null;
update tenants set settings = settings || jsonb_build_object('day', :day) where id % 100 = :day % 100;
commit;
SQL
    # small OLTP transactions (what a web app does all day), each its own commit
    psql_ -d dealer -v day="$1" > /dev/null <<'SQL'
select max(id) as vmax from vehicles \gset
select 'update vehicles set mileage_km = mileage_km + 1, updated_at = now() where id = ' || (:vmax - floor(random() * :vmax * 0.05)::bigint) || ';'
  from generate_series(1, 3000) \gexec
SQL
    psql_ -d dealer -c 'vacuum analyze' >/dev/null
}

backup_day() {
    local d=$1 t0=$SECONDS
    set_day "$d"
    if ((d > 0)); then churn_day "$d"; fi
    local c=$SECONDS
    arsip_ $ARSIP_FULL "$W/cache/arsip-full" -q backup pg --physical --pgdata "$PGDATA" --fast >> "$W/daily.log"
    local p=$SECONDS
    arsip_ $ARSIP_FULL "$W/cache/arsip-full" -q backup pg --logical --dbname dealer >> "$W/daily.log"
    local l=$SECONDS
    as_pg "$PGBIN/pg_dump" -h "$W/pg" -p "$PGPORT_" -U postgres -Fc -Z0 dealer > "$W/day.pgc"
    local dump_bytes; dump_bytes=$(stat -c %s "$W/day.pgc")
    local rtime; rtime=$(date -u -d "@$(fake_epoch)" '+%Y-%m-%d %H:%M:%S')
    restic_ -q backup --stdin --stdin-filename dealer.pgc --host db1 --time "$rtime" < "$W/day.pgc" >> "$W/daily.log" &
    local rp=$!
    if bench_ sizes | grep -q '"arsip-dumps"'; then   # absent after --drop-dumps
        arsip_ $ARSIP_DUMPS "$W/cache/arsip-dumps" -q backup stdin --name dealer.pgc < "$W/day.pgc" >> "$W/daily.log"
    fi
    wait $rp
    local sizes; sizes=$(bench_ sizes)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$d" "$(fake_now)" $((c - t0)) $((p - c)) $((l - p)) $((SECONDS - l)) \
        "$dump_bytes" "$sizes" "$(cat /proc/loadavg | cut -d' ' -f1-3)" | tee -a "$W/days.tsv" >&2
}

build() {
    secrets; load_env
    mkdir -p "$W/cache"
    setup_cluster
    rm -rf "$W/cache"/* "$W/days.tsv" "$W/daily.log"
    s3_start
    set_day 0
    for b in arsip-full arsip-dumps restic; do curl -sf -X PUT "$S3/$b" >/dev/null; done
    arsip_ $ARSIP_FULL "$W/cache/arsip-full" -q init > /dev/null
    rm -f "$W/secrets/arsip-full.key"
    arsip_ $ARSIP_FULL "$W/cache/arsip-full" -q key add --keyfile --out "$W/secrets/arsip-full.key" > /dev/null
    chown postgres: "$W/secrets/arsip-full.key"; chmod 600 "$W/secrets/arsip-full.key"
    arsip_ $ARSIP_DUMPS "$W/cache/arsip-dumps" -q init > /dev/null
    restic_ -q init --repository-version 2 > /dev/null
    write_walpush
    set_archive "$W/walpush.sh %p"
    psql_ -d postgres -c 'select pg_switch_wal()' >/dev/null
    printf 'day\tsim_time\tchurn_s\tphysical_s\tlogical_s\tdump+restic+arsip_stdin_s\tdump_bytes\tbucket_bytes\tload\n' > "$W/days.tsv"
    for ((d = 0; d < DAYS; d++)); do backup_day "$d"; done
    save_pristine
}

# The pristine copy: the store (objects with Last-Modified), PGDATA, the caches, the clock day.
save_pristine() {
    log "saving the pristine store and PGDATA to $W/pristine"
    # let the archiver finish, then stop the cluster so PGDATA is consistent on disk
    psql_ -d postgres -Atc "select last_archived_wal, failed_count from pg_stat_archiver"
    pg_stop
    rm -rf "$W/pristine"; mkdir -p "$W/pristine"
    bench_ "save?dir=$W/pristine/store" > "$W/pristine/store.json"
    cp -a "$PGDATA" "$W/pristine/pgdata"
    cp -a "$W/cache" "$W/pristine/cache"
    echo "$DAYS" > "$W/pristine/days"
    du -sh "$W/pristine"/* | tee "$W/pristine/du.txt" >&2
    pg_start
}
restore_pristine() {
    log "loading the pristine store from $W/pristine"
    pg_stop
    s3_start
    bench_ "load?dir=$W/pristine/store" >&2
    rm -rf "$PGDATA" "$W/cache"
    install -d -o postgres -g postgres -m 755 "$W/pg"
    cp -a "$W/pristine/pgdata" "$PGDATA"
    cp -a "$W/pristine/cache" "$W/cache"
    DAYS=$(cat "$W/pristine/days")
    set_day $((DAYS - 1))
    echo $(( $(cat "$W/clock") + 3600 )) > "$W/clock"   # one hour after the last backups
    pg_start
}

# ---- measuring ------------------------------------------------------------------------------
# measure NAME BUCKET CMD...: wall, peak RSS (time -v), server-side requests by method, bytes
RES=
measure() {
    local name=$1 bucket=$2; shift 2
    bench_ "reset?log=$RES/$name.requests.tsv" > /dev/null
    log "run $name: $*"
    # through bash so that the helper functions (arsip_, restic_) can be timed; peak RSS is
    # that of the largest process time waited for (bash itself is small)
    /usr/bin/time -v -o "$RES/$name.time" bash -c '"$@"' _ "$@" > "$RES/$name.out" 2> "$RES/$name.err" \
        || { log "FAILED $name (see $RES/$name.err)"; tail -5 "$RES/$name.err" >&2; }
    bench_ stats > "$RES/$name.stats.json"
    bench_ "reset?log=" > /dev/null
    bench_ "keys?bucket=$bucket" > "$RES/$name.keys-after.txt"
    python3 "$HERE/prune-report.py" row "$name" "$RES/$name.time" "$RES/$name.stats.json" "$RES/$name.requests.tsv" \
        "$RES/$name.keys-after.txt" "$bucket" | tee -a "$RES/rows.tsv" >&2
}

arsip_forget_prune() {  # arsip_forget_prune TAG REPO BUCKET CACHE
    # one command, as restic's `forget --prune` is (one opening of the repository)
    local tag=$1 repo=$2 bucket=$3 cache=$4
    if [[ $CRED == keyfile ]]; then
        # a full key file of this repository, made before the counters start (anew each
        # time: loading the pristine store drops the slot of an earlier one)
        local key=$W/secrets/$bucket.maint.key
        rm -f "$key"
        arsip_ "$repo" "$cache" -q key add --keyfile --out "$key" > /dev/null
        measure "${tag}_forget_prune" "$bucket" env -u ARSIP_PASSWORD_FILE ARSIP_KEY_FILE="$key" \
            bash -c 'arsip_ "$@"' _ "$repo" "$cache" --json forget --keep-within "$KEEP" --prune \
            --pitr-window "$PITR"
    else
        measure "${tag}_forget_prune" "$bucket" arsip_ "$repo" "$cache" --json forget \
            --keep-within "$KEEP" --prune --pitr-window "$PITR"
    fi
}
restic_forget_prune() {
    # shellcheck disable=SC2086
    measure "${1}_forget_prune" restic restic_ forget $RESTIC_KEEP --prune
}
export -f arsip_ restic_ fake_now fake_epoch
export W ARSIP RESTIC_REPO

# The like-for-like arsip repository (dumps through `backup stdin`) can be dropped from the
# pristine copy to save disk (bench/prune-compare.sh --drop-dumps); --measure-only then skips it.
has_dumps() { grep -q '^{"bucket": "arsip-dumps"}$' "$W/pristine/store/manifest.jsonl"; }
drop_dumps() {
    local m=$W/pristine/store/manifest.jsonl
    python3 - "$m" <<'PY'
import json, os, sys
m = sys.argv[1]; d = os.path.dirname(m); keep = []
for line in open(m):
    e = json.loads(line)
    if e["bucket"] == "arsip-dumps":
        if "file" in e:
            os.remove(os.path.join(d, "objects", e["file"]))
    else:
        keep.append(line)
open(m + ".new", "w").writelines(keep); os.replace(m + ".new", m)
PY
    rm -rf "$W/pristine/cache/arsip-dumps"
    du -sh "$W/pristine" >&2
}

measure_all() {
    local sfx=${1:-}
    log "measure$sfx at $(fake_now)"
    echo "load$sfx: $(cat /proc/loadavg)" >> "$RES/machine.txt"
    # the floor: every object of the arsip-full repository read once through the same server
    [[ -z $sfx ]] && measure "floor_read_all_arsip_full" arsip-full python3 "$HERE/prune-report.py" readall "$S3" arsip-full
    arsip_forget_prune "arsip_full$sfx" $ARSIP_FULL arsip-full "$W/cache/arsip-full"
    has_dumps && arsip_forget_prune "arsip_dumps$sfx" $ARSIP_DUMPS arsip-dumps "$W/cache/arsip-dumps"
    restic_forget_prune "restic$sfx"
    measure "arsip_full_verify$sfx" arsip-full arsip_ $ARSIP_FULL "$W/cache/arsip-full" --json verify
    echo "moto_rss_kib$sfx: $(s3_rss)" >> "$RES/machine.txt"
}

measure_main() {
    secrets; load_env
    RES=$W/results-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$RES"
    printf 'step\twall_s\tpeak_rss_kib\trequests_by_method\tresp_bytes\treq_bytes\tdata_objects_read\tof_them_kept\tkept_bytes_read\texit\tget_bytes_by_prefix\n' > "$RES/rows.tsv"
    {
        echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "nproc: $(nproc)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "mem_total: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        echo "arsip: $("$ARSIP" --version) $ARSIP (worktree git $(git -C "$(dirname "$ARSIP")/../.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
        echo "restic: $(restic version)"
        echo "moto: $("$MOTO_PY" -c 'import moto; print(moto.__version__)')"
        echo "postgresql: $("$PGBIN/postgres" --version)"
        echo "keep: arsip --keep-within $KEEP, restic $RESTIC_KEEP, pitr-window: $PITR, days: $(cat "$W/pristine/days")"
        echo "arsip credential: $CRED"
    } > "$RES/machine.txt"
    restore_pristine
    psql_ -d postgres -Atc "select 'database dealer: ' || pg_size_pretty(pg_database_size('dealer'))" >> "$RES/machine.txt"
    cat "$W/pristine/store.json" | sed 's/^/pristine store: /' >> "$RES/machine.txt"
    bench_ sizes | sed 's/^/bucket bytes before: /' >> "$RES/machine.txt"
    measure_all ""
    bench_ sizes | sed 's/^/bucket bytes after first prune: /' >> "$RES/machine.txt"
    if [[ $NEXT_DAY == 1 ]]; then
        log "the next day: churn and backups, then forget+prune again"
        backup_day "$DAYS" 2>&1 | tee -a "$RES/machine.txt" >&2
        set_day "$DAYS"; echo $(( $(cat "$W/clock") + 3600 )) > "$W/clock"
        measure_all "_day2"
    fi
    if [[ $COLD == 1 ]]; then
        restore_pristine
        rm -rf "$W/cache/arsip-full" "$W/cache/arsip-dumps" "$W/cache/restic"
        arsip_forget_prune "arsip_full_cold" $ARSIP_FULL arsip-full "$W/cache/arsip-full"
        has_dumps && arsip_forget_prune "arsip_dumps_cold" $ARSIP_DUMPS arsip-dumps "$W/cache/arsip-dumps"
        restic_forget_prune "restic_cold"
    fi
    echo "load_after: $(cat /proc/loadavg)" >> "$RES/machine.txt"
    python3 "$HERE/prune-report.py" table "$RES" > "$RES/table.md"
    cat "$RES/machine.txt" "$RES/table.md"
    log "results in $RES"
}

case "${1:-}" in
    "") build; measure_main ;;
    --build-only) build ;;
    --measure-only) measure_main ;;
    --cluster-only) secrets; load_env; setup_cluster ;;
    --drop-dumps) drop_dumps ;;
    --stop) pg_stop; s3_stop ;;
    *) sed -n 2,30p "$0"; exit 2 ;;
esac
