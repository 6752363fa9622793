#!/bin/bash
# (arsip-pg) Run from anywhere as root; needs PostgreSQL 15 programs and a built arsip (ARSIP_BIN).
# p50 latency of `arsip wal push` on real pgbench WAL segments (16 MiB), local repository, agent credentials.
set -euo pipefail
BIN=${ARSIP_BIN:-/work/main/target/release/arsip}
PGBIN=/usr/lib/postgresql/15/bin
W=$(mktemp -d /tmp/arsip-walbench-XXXX); chown postgres $W
runuser -u postgres -- $PGBIN/initdb -D $W/data -U postgres --auth=trust --no-sync >/dev/null
cat >> $W/data/postgresql.conf <<C
listen_addresses = ''
unix_socket_directories = '$W'
port = 5999
wal_keep_size = 4GB
max_wal_size = 8GB
C
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -l $W/log -w start >/dev/null
$PGBIN/pgbench -h $W -p 5999 -U postgres -i -s 20 -q postgres 2>/dev/null
$PGBIN/pgbench -h $W -p 5999 -U postgres -n -c 2 -T 20 postgres 2>/dev/null | grep tps || true
runuser -u postgres -- $PGBIN/pg_ctl -D $W/data -m fast -w stop >/dev/null
mkdir $W/segs; cp $W/data/pg_wal/0000* $W/segs/
export ARSIP_REPO=$W/repo ARSIP_PASSWORD=x ARSIP_TEST_WEAK_KDF=1
$BIN init -q >/dev/null 2>&1
$BIN key add --agent --out $W/agent.key >/dev/null
export ARSIP_KEY_FILE=$W/agent.key
unset ARSIP_PASSWORD
for lvl in ${LEVELS:-1}; do
  export ARSIP_WAL_ZSTD_LEVEL=$lvl
  rm -rf $W/repo/wal $W/repo/stanzas
  for f in $(ls $W/segs | head -40); do
    s=$(date +%s%N); $BIN wal push --pgdata $W/data $W/segs/$f; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
  done > $W/lat.txt
  echo -n "zstd level $lvl: "; sort -n $W/lat.txt | awk '{a[NR]=$1} END {printf "pushes %d  p50 %d ms  p90 %d ms  max %d ms  ", NR, a[int((NR+1)/2)], a[int(NR*0.9)], a[NR]}'
  echo "stored $(du -sm $W/repo/wal | cut -f1) MiB for $(ls $W/segs | head -40 | wc -l) x 16 MiB"
done
rm -rf $W
