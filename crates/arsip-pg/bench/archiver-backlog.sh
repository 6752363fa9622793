#!/bin/bash
# (arsip-pg) Run from anywhere as root; needs PostgreSQL 15 programs and a built arsip (ARSIP_BIN).
# Archiver backlog while pgbench writes WAL as fast as it can, archive_command = arsip wal push (release build).
set -euo pipefail
BIN=${ARSIP_BIN:-/work/main/target/release/arsip}
PGBIN=/usr/lib/postgresql/15/bin
W=$(mktemp -d /tmp/arsip-archbench-XXXX)
export ARSIP_REPO=$W/repo ARSIP_PASSWORD=x ARSIP_TEST_WEAK_KDF=1
$BIN init -q >/dev/null 2>&1; $BIN key add --agent --out $W/agent.key >/dev/null; unset ARSIP_PASSWORD
chown -R postgres $W
runuser -u postgres -- $PGBIN/initdb -D $W/data -U postgres --auth=trust --no-sync >/dev/null
cat >> $W/data/postgresql.conf <<C
listen_addresses = ''
unix_socket_directories = '$W'
port = 5998
wal_level = replica
archive_mode = on
archive_command = '$BIN --repo $W/repo --key-file $W/agent.key wal push %p'
max_wal_size = 4GB
C
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -l $W/log -w start >/dev/null
P="-h $W -p 5998 -U postgres"
$PGBIN/pgbench $P -i -s 20 -q postgres 2>/dev/null
L0=$($PGBIN/psql $P -XAtc "SELECT pg_current_wal_lsn()" postgres)
( maxr=0; while [ -f $W/run ] || [ ! -f $W/done ]; do r=$(ls $W/data/pg_wal/archive_status 2>/dev/null | grep -c ready || true); [ $r -gt $maxr ] && maxr=$r; echo $maxr > $W/maxready; sleep 0.2; [ -f $W/done ] && break; done ) &
$PGBIN/psql $P -Xqc "CREATE TABLE big (id int, payload text)" postgres
echo 'INSERT INTO big SELECT g, repeat(md5(random()::text), 8) FROM generate_series(1, 2000) g;' > $W/bulk.sql
$PGBIN/pgbench $P -n -c 2 -j 2 -T ${SECS:-30} -f $W/bulk.sql postgres 2>/dev/null | grep -E "tps" || true
touch $W/done
L1=$($PGBIN/psql $P -XAtc "SELECT pg_current_wal_lsn()" postgres)
BYTES=$($PGBIN/psql $P -XAtc "SELECT pg_wal_lsn_diff('$L1','$L0')::bigint" postgres)
echo "WAL written: $((BYTES/1048576)) MiB in ${SECS:-30} s = $((BYTES/1048576/${SECS:-30})) MiB/s"
echo "max .ready backlog during run: $(cat $W/maxready) segment(s); ready right after: $(ls $W/data/pg_wal/archive_status | grep -c ready || true)"
sleep 3; echo "ready 3 s later: $(ls $W/data/pg_wal/archive_status | grep -c ready || true); archiver: $($PGBIN/psql $P -XAtc 'SELECT archived_count, failed_count FROM pg_stat_archiver' postgres)"
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -m immediate stop >/dev/null
rm -rf $W
