#!/bin/bash
# (arsip-pg) Physical full backup and restore time vs pg_basebackup, same cluster, one run.
set -euo pipefail
BIN=${ARSIP_BIN:-/work/main/target/release/arsip}
PGBIN=/usr/lib/postgresql/15/bin
SCALE=${SCALE:-50}
W=$(mktemp -d /tmp/arsip-physbench-XXXX)
export ARSIP_REPO=$W/repo ARSIP_PASSWORD=x ARSIP_TEST_WEAK_KDF=1 ARSIP_CACHE_DIR=$W/cache
$BIN init -q --key-file-out $W/full.key >/dev/null 2>&1; $BIN key add --agent --out $W/agent.key >/dev/null; unset ARSIP_PASSWORD
chown -R postgres $W
runuser -u postgres -- $PGBIN/initdb -D $W/data -U postgres --auth=trust --no-sync >/dev/null
cat >> $W/data/postgresql.conf <<C
listen_addresses = ''
unix_socket_directories = '$W'
port = 5997
wal_level = replica
archive_mode = on
archive_command = '$BIN --repo $W/repo --key-file $W/agent.key wal push %p'
max_wal_senders = 4
C
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -l $W/log -w start >/dev/null
export PGHOST=$W PGPORT=5997 PGUSER=postgres
$PGBIN/pgbench -i -s $SCALE -q postgres 2>/dev/null
$PGBIN/psql -XAtc "CHECKPOINT" postgres >/dev/null
echo "data directory: $(du -sm $W/data | cut -f1) MiB (pgbench scale $SCALE)"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
s=$(date +%s%N); $PGBIN/pg_basebackup -D $W/pgbb -c fast -X none >/dev/null 2>&1 || $PGBIN/pg_basebackup -D $W/pgbb -c fast -X fetch >/dev/null; e=$(date +%s%N)
echo "pg_basebackup (plain, uncompressed, unencrypted): $(( (e-s)/1000000 )) ms"
rm -rf $W/pgbb; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
export ARSIP_KEY_FILE=$W/agent.key
s=$(date +%s%N); /usr/bin/time -f "  peak RSS %M KB" $BIN backup pg --physical --fast --pgdata $W/data; e=$(date +%s%N)
echo "arsip backup pg --physical (agent): $(( (e-s)/1000000 )) ms"
$PGBIN/pgbench -n -t 500 postgres >/dev/null 2>&1
s=$(date +%s%N); $BIN backup pg --physical --fast --pgdata $W/data; e=$(date +%s%N)
echo "second arsip backup after 500 pgbench tx: $(( (e-s)/1000000 )) ms"
echo "repository: $(du -sm $W/repo | cut -f1) MiB"
export ARSIP_KEY_FILE=$W/full.key
mkdir $W/r; chown postgres $W/r
s=$(date +%s%N); /usr/bin/time -f "  peak RSS %M KB" $BIN restore pg --physical --no-archive --to $W/r/data >/dev/null; e=$(date +%s%N)
echo "arsip restore pg --physical (files + recovery config): $(( (e-s)/1000000 )) ms"
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -m immediate stop >/dev/null
rm -rf $W
