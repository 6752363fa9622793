#!/usr/bin/env bash
# PostgreSQL side-by-side: arsip vs pgBackRest (physical) and arsip vs restic vs the plan's
# pg_dump|gzip|openssl pipeline (logical), on one cluster, one machine, one run.
#
#   bench/pg-compare.sh setup      # initdb + pg_restore the make-dataset.sh dump (archiving on, command 'true')
#   bench/pg-compare.sh floor      # pg_dump -> /dev/null, disk read rate of PGDATA
#   bench/pg-compare.sh physical   # arsip physical backup+restore, pgBackRest full backup+restore
#   bench/pg-compare.sh logical    # arsip logical, restic stdin, plan pipeline; restores
#   bench/pg-compare.sh week       # 7 simulated days: daily churn, then arsip physical vs pgBackRest
#                                  # full+incr (both archiving WAL), arsip logical vs restic dumps
#                                  # (WEEK_LOGICAL=0: physical tools only; BLOCK=32K: arsip's
#                                  # physical repository with other relation blocks)
#   bench/pg-compare.sh blocks     # one full physical backup per relation block size (BLOCKS)
#   bench/pg-compare.sh cleanup
#
# Every measured command runs under /usr/bin/time -f '%e %M' (wall s, peak RSS KiB of the
# largest process in the tree that time waits for; for pipelines the shell's children are
# reported by their own `time` wrappers). Results append to $W/results.tsv.
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
W=${W:-/var/tmp/pgcmp}
PORT=${PORT:-5499}
HERE=$(cd "$(dirname "$0")" && pwd)
ARSIP=$(realpath "${ARSIP:-$HERE/../target/release/arsip}")
DUMP=${DUMP:-/var/tmp/arsip-bench/dataset/dump.pgc}
PGDATA=$W/data
export ARSIP_PASSWORD=${ARSIP_PASSWORD:-bench-pass}
export PGHOST=$W PGPORT=$PORT PGUSER=postgres
as_pg() { runuser -u postgres -- "$@"; }
psql_() { as_pg env PGHOST=$W PGPORT=$PORT "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -U postgres "$@"; }
log() { printf '[pg-compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
# measure NAME CMD... : wall seconds and peak RSS (KiB, largest single process) into results.tsv.
# Caches are not dropped (the machine is shared): every tool reads a warm page cache, the
# dataset (~3 GiB) fits in RAM many times over.
measure() {
    local name=$1; shift
    log "run $name: $*"
    # through bash so that the helper functions (as_pg, arsip_pg, pgbr) can be timed too
    /usr/bin/time -o "$W/$name.time" -f '%e %M' bash -c '"$@"' _ "$@" >"$W/$name.out" 2>"$W/$name.err" || { log "FAILED $name (see $W/$name.err)"; echo "$name FAILED" >> $W/results.tsv; return 1; }
    local e m; read -r e m < "$W/$name.time"
    printf '%s\t%s\t%s\n' "$name" "$e" "$m" | tee -a $W/results.tsv
}
set_archive() {  # set_archive 'command'
    psql_ -d postgres -c "alter system set archive_command = '$1'" -c 'select pg_reload_conf()' >/dev/null
}

setup() {
    mkdir -p $W; chmod 755 $W; chown postgres: $W
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$W'
port = $PORT
wal_level = replica
archive_mode = on
archive_command = 'true'
max_wal_size = 4GB
shared_buffers = 512MB
maintenance_work_mem = 512MB
autovacuum = off
CONF
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$W/server.log" start >/dev/null
    psql_ -d postgres -c 'create database dealer'
    log "pg_restore $DUMP"
    as_pg env PGHOST=$W PGPORT=$PORT "$PGBIN/pg_restore" -U postgres -d dealer -j 2 "$DUMP" < /dev/null
    psql_ -d dealer -c 'vacuum analyze' -c 'checkpoint'
    psql_ -d postgres -Atc "select pg_size_pretty(pg_database_size('dealer'))"
    du -sh "$PGDATA"
}

AREPO=$W/arsip-repo
KEY=$W/arsip-full.key
PBCONF=$W/pgbackrest.conf
# arsip_at REPO ARGS...: arsip as postgres on REPO (its own host cache); arsip_pg: on $AREPO
arsip_at() { local r=$1; shift; as_pg env ARSIP_PASSWORD="$ARSIP_PASSWORD" ARSIP_REPO=$r ARSIP_CACHE_DIR=$r-cache PGHOST=$W PGPORT=$PORT PGUSER=postgres "$ARSIP" -q "$@"; }
arsip_pg() { arsip_at $AREPO "$@"; }
pgbr() { as_pg pgbackrest --config=$PBCONF --stanza=main "$@"; }
export -f as_pg arsip_at arsip_pg pgbr log
export W PORT PGBIN AREPO KEY PBCONF ARSIP

floor() {
    measure floor_pg_dump_Z0_devnull bash -c "runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/pg_dump -U postgres -Fc -Z0 dealer > /dev/null"
    # through a pipe: GNU tar -f /dev/null skips reading file contents
    measure floor_read_pgdata_cached_pipe bash -c "tar -C '$PGDATA' -cf - --exclude=./pg_wal . | cat > /dev/null"
    local big; big=$(find "$PGDATA/base" -type f -size +500M | head -1)
    [[ -n $big ]] && measure floor_disk_read_direct_1GiB dd if="$big" iflag=direct of=/dev/null bs=4M
    tail -1 $W/floor_disk_read_direct_1GiB.err 2>/dev/null || true
    du -sb --exclude=pg_wal "$PGDATA" | tee $W/pgdata.size
    # restore floors: pg_restore straight from the uncompressed dump file, no tool in between
    for j in 1 2; do
        psql_ -d postgres -c 'drop database if exists r_floor' -c 'create database r_floor' >/dev/null
        measure floor_pg_restore_file_jobs$j as_pg env PGHOST=$W PGPORT=$PORT "$PGBIN/pg_restore" -U postgres -d r_floor --jobs=$j "$DUMP"
    done
    psql_ -d postgres -c 'drop database r_floor' >/dev/null
}

physical() {
    # arsip: repository, full key file for archive_command and restore_command
    rm -rf $AREPO $AREPO-cache; install -d -o postgres -g postgres $AREPO $AREPO-cache
    rm -f $KEY
    arsip_pg init >/dev/null
    arsip_pg key add --keyfile --out $KEY >/dev/null
    set_archive "$ARSIP --repo $AREPO --key-file $KEY wal push %p"
    psql_ -d postgres -c 'select pg_switch_wal()' >/dev/null
    measure arsip_physical_backup arsip_pg backup pg --physical --pgdata "$PGDATA" --fast
    rm -rf $W/arsip-restore
    measure arsip_physical_restore arsip_pg --key-file $KEY restore pg --physical latest --to $W/arsip-restore --target immediate
    du -sb $AREPO | tee $W/arsip_physical_repo.size

    pgbr_setup
    set_archive "pgbackrest --config=$PBCONF --stanza=main archive-push %p"
    pgbr stanza-create
    pgbr check
    measure pgbackrest_full_backup pgbr --type=full backup
    rm -rf $W/pgbr-restore; install -d -o postgres -g postgres -m 700 $W/pgbr-restore
    measure pgbackrest_restore pgbr --pg1-path=$W/pgbr-restore --type=immediate restore
    du -sb $W/pgbr-repo | tee $W/pgbr_repo.size
    set_archive true
}

# pgBackRest 2.45: a fresh repository and its configuration
pgbr_setup() {
    rm -rf $W/pgbr-repo $W/pgbr-log $W/pgbr-lock; install -d -o postgres -g postgres $W/pgbr-repo $W/pgbr-log $W/pgbr-lock
    cat > $PBCONF <<CONF
[global]
repo1-path=$W/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-pgbackrest-passphrase-0123456789
repo1-retention-full=2
compress-type=zst
compress-level=3
process-max=2
start-fast=y
lock-path=$W/pgbr-lock
log-path=$W/pgbr-log
log-level-console=warn

[main]
pg1-path=$PGDATA
pg1-socket-path=$W
pg1-port=$PORT
CONF
    chown postgres: $PBCONF; chmod 600 $PBCONF
}

logical() {
    # Backups alternate ROUNDS times (default 3): on this VM one tool's time moves by ±2 s
    # from run to run, so each ratio is reported per round and as the ratio of medians.
    export RESTIC_PASSWORD=bench-restic RESTIC_REPOSITORY=$W/restic-repo RESTIC_CACHE_DIR=$W/restic-cache
    mkdir -p $W/plan; head -c 32 /dev/urandom | base64 > $W/plan.pass
    for round in $(seq ${ROUNDS:-3}); do
        # every round starts from empty repositories, so each backup is a first one
        local sfx=""; [ "$round" = 1 ] || sfx=_r$round
        # arsip: pg_dump -Fc -Z0 streamed into the repository (compressed, encrypted, deduplicated)
        rm -rf $AREPO-logical $AREPO-logical-cache; install -d -o postgres -g postgres $AREPO-logical
        arsip_at $AREPO-logical init >/dev/null
        measure arsip_logical_backup$sfx arsip_at $AREPO-logical backup pg --logical --dbname dealer
        du -sb $AREPO-logical | tee $W/arsip_logical_repo$sfx.size

        # restic: same uncompressed dump on stdin (repository v2, compression auto = zstd)
        rm -rf $W/restic-repo $W/restic-cache
        restic init -q
        measure restic_logical_backup$sfx bash -c "runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/pg_dump -U postgres -Fc -Z0 dealer | restic backup -q --stdin --stdin-filename dealer.pgc"
        du -sb $W/restic-repo | tee $W/restic_repo$sfx.size

        # the plan's pipeline
        rm -f $W/plan/dealer.pgc.gz.enc
        measure plan_logical_backup$sfx bash -c "set -o pipefail; runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/pg_dump -U postgres -Fc -Z9 dealer | gzip | openssl enc -aes-256-cbc -pbkdf2 -pass file:$W/plan.pass > $W/plan/dealer.pgc.gz.enc"
        du -sb $W/plan | tee $W/plan$sfx.size
    done

    # restores, each into a fresh database
    psql_ -d postgres -c 'drop database if exists r_arsip' -c 'drop database if exists r_plan' >/dev/null
    measure arsip_logical_restore arsip_at $AREPO-logical restore pg --logical latest --dbname r_arsip --create
    psql_ -d postgres -c 'drop database r_arsip' >/dev/null
    measure arsip_logical_restore_jobs2 arsip_at $AREPO-logical restore pg --logical latest --dbname r_arsip --create --jobs 2
    measure plan_logical_restore bash -c "set -o pipefail; runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/createdb -U postgres r_plan && openssl enc -d -aes-256-cbc -pbkdf2 -pass file:$W/plan.pass < $W/plan/dealer.pgc.gz.enc | gunzip | runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/pg_restore -U postgres -d r_plan"
    for d in dealer r_arsip r_plan; do
        psql_ -d $d -Atc "select '$d', (select count(*) from vehicles), (select count(*) from photos), (select count(*) from leads), pg_size_pretty(pg_database_size('$d'))"
    done | tee $W/restore-check.txt
    psql_ -d postgres -c 'drop database r_arsip' -c 'drop database r_plan'   # keep PGDATA as it was for `physical`
}

# One simulated day of churn (day $1 >= 1), shaped like make-dataset.sh's: 1% of rows updated
# and 0.2% of vehicles deleted among the newest 3%, 0.5% new vehicles (with photos) and leads,
# 1% of tenants change settings.
churn_day() {
    psql_ -d dealer -v day="$1" <<'SQL'
select setseed(0.01 * :day) \gset
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
delete from vehicles where id > :vmax * 0.97 and id % 15 = :day;
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
update tenants set settings = settings || jsonb_build_object('day', :day) where id % 100 = :day;
commit;
SQL
    psql_ -d dealer -c 'vacuum analyze' -c 'checkpoint' >/dev/null
}

week() {
    local WP=$W/week-arsip-physical WL=$W/week-arsip-logical WR=$W/week-restic
    # make-dataset.sh builds some tables with GROUP BY, so after pg_restore their heap order
    # is not id order and "the newest 3% of rows" would be spread over every page. In a
    # live table rows arrive in id order; CLUSTER restores that (once; later runs skip it).
    if [[ ! -f $W/clustered ]]; then
        log "cluster tables by primary key"
        set_archive true   # CLUSTER's WAL is not part of the week
        psql_ -d dealer -c 'cluster vehicles using vehicles_pkey' -c 'cluster photos using photos_pkey' \
              -c 'cluster leads using leads_pkey' -c 'vacuum analyze' -c 'checkpoint' >/dev/null
        touch $W/clustered
    fi
    rm -rf $WP $WP-cache $WP.key $WL $WL-cache $WR $W/week.tsv
    install -d -o postgres -g postgres $WP $WP-cache $WL $WL-cache
    arsip_at $WP init ${BLOCK:+--block-size $BLOCK} >/dev/null
    arsip_at $WP key add --keyfile --out $WP.key >/dev/null
    arsip_at $WL init >/dev/null
    pgbr_setup
    # every WAL segment goes to both: each tool's physical backups need their WAL
    set_archive "$ARSIP --repo $WP --key-file $WP.key wal push %p && pgbackrest --config=$PBCONF --stanza=main archive-push %p"
    pgbr stanza-create
    export RESTIC_PASSWORD=bench-restic RESTIC_REPOSITORY=$WR RESTIC_CACHE_DIR=$W/restic-cache
    restic init -q
    printf 'day\tarsip_physical\tpgbackrest\tarsip_logical\trestic\n' > $W/week.tsv
    for day in 0 1 2 3 4 5 6; do
        if ((day > 0)); then log "day $day: churn"; churn_day $day; fi
        local type=incr; ((day == 0)) && type=full
        measure week${day}_pgbackrest_$type pgbr --type=$type backup
        measure week${day}_arsip_physical arsip_at $WP backup pg --physical --pgdata "$PGDATA" --fast
        [[ ${WEEK_LOGICAL:-1} == 1 ]] || { printf '%s\t%s\t%s\n' $day $(du -sb $WP | cut -f1) $(du -sb $W/pgbr-repo | cut -f1) | tee -a $W/week.tsv; continue; }
        measure week${day}_arsip_logical arsip_at $WL backup pg --logical --dbname dealer
        measure week${day}_restic_logical bash -c "runuser -u postgres -- env PGHOST=$W PGPORT=$PORT $PGBIN/pg_dump -U postgres -Fc -Z0 dealer | restic backup -q --stdin --stdin-filename dealer.pgc"
        printf '%s\t%s\t%s\t%s\t%s\n' $day $(du -sb $WP | cut -f1) $(du -sb $W/pgbr-repo | cut -f1) \
            $(du -sb $WL | cut -f1) $(du -sb $WR | cut -f1) | tee -a $W/week.tsv
    done
    set_archive true
    psql_ -d dealer -Atc "select 'after 7 days', pg_size_pretty(pg_database_size('dealer'))" | tee -a $W/week.tsv
}

# Full physical backup time and stored bytes per relation block size, each into a fresh
# repository (archiving into it), alternating sizes RUNS times.
blocks() {
    local R=$W/blocks-repo
    for run in $(seq ${RUNS:-2}); do
        for b in ${BLOCKS:-128K 32K 16K}; do
            rm -rf $R $R-cache $R.key; install -d -o postgres -g postgres $R $R-cache
            arsip_at $R init --block-size $b >/dev/null
            arsip_at $R key add --keyfile --out $R.key >/dev/null
            set_archive "$ARSIP --repo $R --key-file $R.key wal push %p"
            measure blocks_${b}_run$run arsip_at $R backup pg --physical --pgdata "$PGDATA" --fast
            printf 'blocks_%s_run%s_bytes\t%s\n' $b $run $(du -sb $R | cut -f1) | tee -a $W/results.tsv
        done
    done
    set_archive true
}

cleanup() {
    for d in $PGDATA $W/arsip-restore $W/pgbr-restore; do
        [[ -f $d/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$d" -m fast stop || true
    done
    rm -rf "$W"
}

case "${1:-}" in setup|floor|physical|logical|week|blocks|cleanup) "$1";; *) sed -n 2,18p "$0"; exit 2;; esac
