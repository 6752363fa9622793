#!/usr/bin/env bash
# Build the benchmark input: a pg_dump (custom format, uncompressed) of a multi-tenant
# car-dealer database with realistic entropy, plus a "changed" dump of the same database after
# a small day-like churn.
#
#   bench/make-dataset.sh [DUMP] [CHANGED_DUMP]
#
# Defaults: DUMP=/var/tmp/arsip-bench/dataset/dump.pgc, CHANGED_DUMP=<DUMP without .pgc>.changed.pgc
# Environment:
#   VEHICLES=N   number of vehicles; everything else scales with it (default 1000000, which
#                gives a ~2 GiB dump). Leads = VEHICLES, photos ~ 3 x VEHICLES.
#   FORCE=1      rebuild even if cached dumps with the same parameters exist.
#
# What it does: starts a throwaway PostgreSQL 15 cluster as the `postgres` OS user (initdb
# refuses root) in a temporary directory, with a random port and its unix socket inside that
# directory (no TCP listener), generates the data in SQL, runs `pg_dump -Fc -Z0`, applies the
# churn, dumps again, then stops and deletes the cluster.
#
# Entropy: descriptions and messages are built from random words of a 64k-word English list
# (/usr/share/dict/words, Debian package wamerican), photo rows carry sha256 hex digests,
# VINs and inspector ids are hashes, JSON documents (specs, EXIF, settings, UTM) have varied
# keys and values, timestamps are spread over five years. zstd -3 compresses this dump about
# 3-4x (pgbench filler compresses ~100x and says nothing about a real database).
#
# Churn (the "changed" dump, a plausible day of a dealer platform): in vehicles, photos and
# leads, 1% of the rows are updated (price/status, re-processed photos, lead status), chosen
# among the newest 3% of rows (active listings and fresh leads); 0.2% of vehicles (with their
# photos) are deleted from the newest 3%; 0.5% new vehicles (with photos) and 0.5% new leads
# are inserted; 1% of tenants change settings. PostgreSQL writes updated rows at the end of the
# heap, so in the dump the changed region is the tail ~3% of each table plus the appended rows
# (leads of a deleted vehicle get vehicle_id = NULL; a lead refers to a vehicle listed in the ~5
# weeks before it, so those leads are recent ones too). A chunking tool therefore stores again
# ~4% of the dump's bytes (~1.4% after compression); a 1% change spread uniformly would touch
# every ~1 MiB chunk and no chunk-level deduplication could help.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
VEHICLES=${VEHICLES:-1000000}
DUMP=${1:-/var/tmp/arsip-bench/dataset/dump.pgc}
CHANGED=${2:-${DUMP%.pgc}.changed.pgc}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf '[make-dataset %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Parameters that determine the content; a cached pair is reused only if they match.
# Comment lines are left out of the hash: editing a comment does not regenerate ~4 GiB.
STAMP_TEXT="vehicles=$VEHICLES script=$(grep -v '^[[:space:]]*#' "$HERE/make-dataset.sh" | sha256sum | cut -c1-16)"
STAMP="$DUMP.params"
if [[ -z "${FORCE:-}" && -s "$DUMP" && -s "$CHANGED" && -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]]; then
    log "cached: $DUMP and $CHANGED ($STAMP_TEXT); FORCE=1 rebuilds"
    exit 0
fi

[[ -x $PGBIN/initdb ]] || { echo "PostgreSQL 15 not found in $PGBIN (apt-get install postgresql-15)" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "OS user postgres missing" >&2; exit 1; }
if [[ ! -s /usr/share/dict/words ]]; then
    log "installing word list (wamerican)"
    apt-get install -y -qq wamerican >/dev/null
fi

mkdir -p "$(dirname "$DUMP")" "$(dirname "$CHANGED")" /var/tmp/arsip-bench
chmod 755 /var/tmp/arsip-bench
TMP=$(mktemp -d /var/tmp/arsip-bench/pg.XXXXXX)
chmod 755 "$TMP"
chown postgres: "$TMP"
PGDATA=$TMP/data
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || shuf -i 20000-60000 -n 1)

as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
    if [[ -f $PGDATA/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 130" INT TERM

log "initdb in $TMP (port $PORT, socket only)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
# Throwaway cluster: durability off, minimal WAL, no autovacuum (keeps the heap order, and so
# the dumps, deterministic).
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$TMP/server.log" -o "\
 -c listen_addresses='' -c unix_socket_directories='$TMP' -c port=$PORT \
 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
 -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c checkpoint_timeout=1h \
 -c autovacuum=off -c shared_buffers=512MB -c work_mem=64MB -c maintenance_work_mem=512MB \
 -c max_parallel_workers_per_gather=0" start >/dev/null

psql_() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres "$@"; }
psql_ -d postgres -c 'create database dealer'

log "loading word list"
psql_ -d dealer -c 'create table words (i serial primary key, w text not null)'
grep -E '^[a-z]{2,}$' /usr/share/dict/words | psql_ -d dealer -c '\copy words(w) from stdin'

log "generating data (vehicles=$VEHICLES)"
t0=$SECONDS
psql_ -d dealer -v V="$VEHICLES" <<'SQL'
select setseed(0.4242) \gset
select count(*) as nw from words \gset
-- Everything below is set-based (random ids computed in a subquery, then a hash join); a
-- correlated lookup with random() in its condition would scan the whole table per row.

-- A pool of 400k random phrases (4-12 words) that descriptions, notes and messages draw from.
create table phrases as
select x.p as id, string_agg(w.w, ' ' order by x.k) as txt
from (select p, k, 1 + floor(random() * :nw)::int as r
        from generate_series(1, 400000) p, generate_series(1, 4 + p % 9) k) x
join words w on w.i = x.r
group by x.p;
alter table phrases add primary key (id);
analyze words; analyze phrases;

begin;
create table tenants (
    id          int primary key,
    slug        text not null unique,
    name        text not null,
    city        text not null,
    plan        text not null,
    created_at  timestamptz not null,
    settings    jsonb not null
);
insert into tenants
select t,
       w1.w || '-' || w2.w || '-' || t,
       initcap(w1.w) || ' ' || initcap(w2.w) || ' Motor',
       (array['Jakarta','Surabaya','Bandung','Medan','Semarang','Makassar','Palembang','Tangerang',
              'Depok','Bekasi','Bogor','Denpasar','Yogyakarta','Malang','Balikpapan','Pekanbaru'])[1 + floor(random()*16)::int],
       (array['starter','growth','pro','enterprise'])[1 + floor(random()*4)::int],
       timestamptz '2019-01-01 00:00+07' + random() * interval '4 years',
       jsonb_build_object(
           'currency', 'IDR',
           'timezone', 'Asia/Jakarta',
           'brand_color', '#' || substr(md5(random()::text), 1, 6),
           'lead_webhook', 'https://' || w1.w || '.example.co.id/hooks/' || substr(md5(random()::text), 1, 20),
           'max_photos', 10 + floor(random() * 30)::int,
           'watermark', random() < 0.6,
           'financing_partners', (select jsonb_agg(x) from unnest(array['BCA Finance','Adira','Mandiri Tunas','OTO','WOM','Astra Credit']) x
                                   where random() < 0.4 + 0 * t))
from (select t, 1 + floor(random() * :nw)::int as r1, 1 + floor(random() * :nw)::int as r2
        from generate_series(1, 1500) t) s
join words w1 on w1.i = s.r1
join words w2 on w2.i = s.r2
order by t;

-- Descriptions: 2-6 phrases per vehicle.
create temp table vdesc as
select x.g, string_agg(ph.txt, '. ' order by x.k) as txt
from (select g, k, 1 + floor(random() * 400000)::int as r
        from generate_series(1, :V) g, generate_series(1, 2 + g % 5) k) x
join phrases ph on ph.id = x.r
group by x.g;

create table vehicles (
    id           bigint primary key,
    tenant_id    int not null references tenants,
    vin          text not null,
    make         text not null,
    model        text not null,
    year         int not null,
    price_idr    bigint not null,
    mileage_km   int not null,
    color        text not null,
    plate        text not null,
    status       text not null,
    specs        jsonb not null,
    description  text not null,
    created_at   timestamptz not null,
    updated_at   timestamptz not null
);
insert into vehicles
select s.g,
       -- a few large tenants, a long tail of small ones
       1 + floor(1500 * power(random(), 2.5))::int,
       upper(substr(encode(sha256(('vin' || s.g || random())::bytea), 'hex'), 1, 17)),
       split_part(mm, ' ', 1),
       substr(mm, length(split_part(mm, ' ', 1)) + 2),
       2008 + floor(random() * 17)::int,
       (50 + floor(random() * 1950)::int) * 1000000::bigint + floor(random() * 100)::int * 10000,
       floor(random() * 250000)::int,
       (array['Hitam','Putih','Silver','Abu-abu','Merah','Biru','Coklat','Hijau','Kuning','Oranye'])[1 + floor(random()*10)::int],
       (array['B','D','L','F','AB','H','N','BK','DK','KT'])[1 + floor(random()*10)::int] || ' ' ||
           (1 + floor(random() * 9998)::int) || ' ' || chr(65 + floor(random()*26)::int) || chr(65 + floor(random()*26)::int) ||
           chr(65 + floor(random()*26)::int),
       (array['available','available','available','reserved','sold','draft'])[1 + floor(random()*6)::int],
       jsonb_build_object(
           'engine_cc', (array[1000,1200,1300,1500,1800,2000,2400,2500,2800,3000])[1 + floor(random()*10)::int],
           'transmission', (array['AT','MT','CVT','DCT'])[1 + floor(random()*4)::int],
           'fuel', (array['bensin','diesel','hybrid','listrik'])[1 + floor(random()*4)::int],
           'seats', 2 + floor(random() * 7)::int,
           'owners', 1 + floor(random() * 4)::int,
           'service_records', floor(random() * 15)::int,
           'tax_expiry', (date '2024-01-01' + floor(random() * 900)::int)::text,
           'features', (select jsonb_agg((array['sunroof','kamera mundur','sensor parkir','keyless','cruise control',
                         'android auto','apple carplay','jok kulit','airbag samping','ESP','velg racing','head unit',
                         'spion elektrik','lampu LED','dashcam','TPMS','ISOFIX','AC double blower','push start',
                         'hill start assist'])[1 + floor(random()*20)::int]) from generate_series(1, 1 + s.g % 6)),
           'inspection', jsonb_build_object(
               'score', round((50 + random() * 50)::numeric, 1),
               'inspector', substr(md5(random()::text), 1, 12),
               'checked_at', timestamptz '2019-01-01 00:00+07' + random() * interval '5 years',
               'notes', n.txt)),
       d.txt,
       ts, ts + random() * interval '90 days'
from (
    select g,
           (array['Toyota Avanza','Toyota Innova Reborn','Toyota Fortuner','Toyota Yaris','Toyota Rush',
                  'Honda Brio','Honda HR-V','Honda CR-V','Honda Civic','Honda Jazz','Daihatsu Xenia',
                  'Daihatsu Terios','Daihatsu Ayla','Mitsubishi Xpander','Mitsubishi Pajero Sport',
                  'Suzuki Ertiga','Suzuki XL7','Suzuki Carry Pick Up','Nissan Livina','Nissan X-Trail',
                  'Wuling Almaz','Wuling Air ev','Hyundai Creta','Hyundai Stargazer','Kia Sonet',
                  'Mazda CX-5','Mazda 2','BMW 320i','Mercedes-Benz C200','Chery Tiggo 7 Pro'])[1 + floor(random()*30)::int] as mm,
           1 + floor(random() * 400000)::int as note_id,
           timestamptz '2019-01-01 00:00+07' + (g::float8 / :V) * interval '5 years' + random() * interval '6 hours' as ts
    from generate_series(1, :V) g
) s
join phrases n on n.id = s.note_id
join vdesc d on d.g = s.g
order by s.g;
drop table vdesc;
commit;

begin;
create table photos (
    id            bigint primary key,
    tenant_id     int not null,
    vehicle_id    bigint not null references vehicles on delete cascade,
    position      int not null,
    s3_key        text not null,
    sha256        text not null,
    bytes         int not null,
    width         int not null,
    height        int not null,
    content_type  text not null,
    exif          jsonb not null,
    uploaded_at   timestamptz not null
);
insert into photos
select row_number() over (order by v.id, k),
       v.tenant_id, v.id, k,
       'vehicles/' || v.tenant_id || '/' || v.id || '/photo-' || k || '.jpg',
       encode(sha256(('p' || v.id || '-' || k || random())::bytea), 'hex'),
       80000 + floor(random() * 2400000)::int,
       (array[1280,1600,1920,2048,3024,4032])[1 + floor(random()*6)::int],
       (array[720,960,1080,1536,2268,3024])[1 + floor(random()*6)::int],
       (array['image/jpeg','image/jpeg','image/jpeg','image/webp','image/heic'])[1 + floor(random()*5)::int],
       jsonb_build_object(
           'camera', (array['iPhone 13','iPhone 15 Pro','Galaxy S23','Galaxy A54','Redmi Note 12','OPPO Reno8','vivo V27','Canon EOS 200D','Sony A6400'])[1 + floor(random()*9)::int],
           'iso', (array[50,100,200,400,800,1600])[1 + floor(random()*6)::int],
           'exposure', '1/' || (30 + floor(random() * 2000)::int),
           'gps', jsonb_build_object('lat', round((-6.4 + random() * 0.5)::numeric, 6), 'lon', round((106.6 + random() * 0.6)::numeric, 6)),
           'blurhash', substr(encode(sha256(('b' || v.id || k || random())::bytea), 'base64'), 1, 28)),
       v.created_at + random() * interval '3 days'
from vehicles v, generate_series(1, 1 + (v.id % 5)::int) k
order by v.id, k;
commit;

begin;
create temp table lmsg as
select x.g, string_agg(ph.txt, '. ' order by x.k) as txt
from (select g, k, 1 + floor(random() * 400000)::int as r
        from generate_series(1, :V) g, generate_series(1, 1 + g % 3) k) x
join phrases ph on ph.id = x.r
group by x.g;

create table leads (
    id          bigint primary key,
    tenant_id   int not null,
    vehicle_id  bigint references vehicles on delete set null,
    name        text not null,
    email       text not null,
    phone       text not null,
    message     text not null,
    source      text not null,
    status      text not null,
    utm         jsonb,
    created_at  timestamptz not null
);
insert into leads
select s.g, v.tenant_id, v.id,
       fn || ' ' || ln,
       lower(fn) || '.' || lower(ln) || floor(random() * 1000)::int || '@' ||
           (array['gmail.com','yahoo.co.id','outlook.com','icloud.com','ymail.com','hotmail.com'])[1 + floor(random()*6)::int],
       '+62 8' || lpad(floor(random() * 10000000000)::bigint::text, 10, '0'),
       m.txt,
       (array['website','whatsapp','olx','instagram','facebook','walk-in','phone'])[1 + floor(random()*7)::int],
       (array['new','contacted','test-drive','negotiation','won','lost'])[1 + floor(random()*6)::int],
       case when s.has_utm then jsonb_build_object(
           'utm_source', (array['google','facebook','instagram','tiktok','newsletter'])[1 + floor(random()*5)::int],
           'utm_campaign', w.w || '-' || (2019 + floor(random()*6)::int),
           'gclid', substr(encode(sha256(('g' || s.g || random())::bytea), 'base64'), 1, 40)) end,
       ts
from (
    select g,
           -- a lead asks about a car listed in the ~5 weeks before it (vehicles and leads both
           -- spread evenly over five years), so leads of recent listings are recent leads
           greatest(1, g - floor(random() * :V * 0.02)::bigint) as vid,
           1 + floor(random() * :nw)::int as wid,
           random() < 0.7 as has_utm,
           (array['Budi','Siti','Agus','Dewi','Rizky','Putri','Andi','Ayu','Dimas','Nur','Eko','Sri','Fajar','Indah',
                  'Hendra','Wulan','Yusuf','Ratna','Bayu','Lestari','Arif','Maya','Joko','Intan','Teguh','Fitri',
                  'Gilang','Nadia','Reza','Kartika'])[1 + floor(random()*30)::int] as fn,
           (array['Santoso','Wijaya','Saputra','Hidayat','Pratama','Kusuma','Nugroho','Siregar','Nasution',
                  'Simanjuntak','Halim','Tanjung','Lubis','Gunawan','Setiawan','Wibowo','Susanto','Hakim',
                  'Harahap','Rahman','Purnomo','Suharto','Lim','Tan','Sitompul','Effendi','Wahyudi','Ramadhan'])[1 + floor(random()*28)::int] as ln,
           timestamptz '2019-01-01 00:00+07' + (g::float8 / :V) * interval '5 years' + random() * interval '2 hours' as ts
    from generate_series(1, :V) g
) s
join vehicles v on v.id = s.vid
join words w on w.i = s.wid
join lmsg m on m.g = s.g
order by s.g;
drop table lmsg;
commit;

create index vehicles_tenant_idx on vehicles (tenant_id, status);
create index photos_vehicle_idx on photos (vehicle_id);
create index leads_tenant_idx on leads (tenant_id, created_at);
create index leads_vehicle_idx on leads (vehicle_id);
drop table phrases;
drop table words;
SQL
log "generated in $((SECONDS - t0)) s"

dump() {
    local out=$1 t1=$SECONDS
    as_pg "$PGBIN/pg_dump" -h "$TMP" -p "$PORT" -U postgres -Fc -Z0 dealer > "$out.tmp"
    mv "$out.tmp" "$out"
    log "dumped $(stat -c %s "$out") bytes to $out in $((SECONDS - t1)) s"
}
rm -f "$STAMP"
dump "$DUMP"

log "applying churn"
psql_ -d dealer <<'SQL'
select setseed(0.1717) \gset
begin;
select max(id) as vmax from vehicles \gset
select max(id) as pmax from photos \gset
select max(id) as lmax from leads \gset
-- 1% of rows updated, taken from the newest 3% (every third row there)
update vehicles set price_idr = price_idr - 5000000 * (1 + floor(random() * 4)::int),
                    status = (array['available','reserved','sold'])[1 + floor(random()*3)::int],
                    updated_at = timestamptz '2024-01-02 10:00+07' + random() * interval '10 hours'
 where id > :vmax * 0.97 and id % 3 = 0;
update photos set sha256 = encode(sha256(('re' || id || random())::bytea), 'hex'),
                  bytes = 60000 + floor(random() * 1500000)::int, content_type = 'image/webp'
 where id > :pmax * 0.97 and id % 3 = 1;
update leads set status = (array['contacted','test-drive','negotiation','won','lost'])[1 + floor(random()*5)::int]
 where id > :lmax * 0.97 and id % 3 = 2;
-- 0.2% of vehicles deleted (photos cascade), from the newest 3%
delete from vehicles where id > :vmax * 0.97 and id % 15 = 1;
-- 0.5% new vehicles with their photos, 0.5% new leads
insert into vehicles
select :vmax + g, 1 + floor(1500 * power(random(), 2.5))::int,
       upper(substr(encode(sha256(('vin2' || g || random())::bytea), 'hex'), 1, 17)),
       make, model, year, price_idr + 1000000, floor(random() * 250000)::int, color, plate, 'draft', specs,
       description, timestamptz '2024-01-02 08:00+07' + random() * interval '12 hours',
       timestamptz '2024-01-02 20:00+07'
from vehicles o join generate_series(1, (:vmax / 200)::int) g on o.id = 1 + (g * 7919) % :vmax;
insert into photos
select :pmax + row_number() over (order by v.id, k), v.tenant_id, v.id, k,
       'vehicles/' || v.tenant_id || '/' || v.id || '/photo-' || k || '.jpg',
       encode(sha256(('p2' || v.id || '-' || k || random())::bytea), 'hex'),
       80000 + floor(random() * 2400000)::int, 1920, 1080, 'image/jpeg',
       jsonb_build_object('camera', 'iPhone 15 Pro', 'iso', 100, 'exposure', '1/' || (30 + floor(random() * 2000)::int),
                          'blurhash', substr(encode(sha256(('b2' || v.id || k)::bytea), 'base64'), 1, 28)),
       v.created_at + random() * interval '1 hour'
from vehicles v, generate_series(1, 1 + (v.id % 5)::int) k where v.id > :vmax;
insert into leads
select :lmax + g, o.tenant_id, o.vehicle_id, o.name, o.email,
       '+62 8' || lpad(floor(random() * 10000000000)::bigint::text, 10, '0'),
       o.message, o.source, 'new', o.utm, timestamptz '2024-01-02 07:00+07' + random() * interval '14 hours'
from leads o join generate_series(1, (:lmax / 200)::int) g on o.id = 1 + (g * 104729) % :lmax
where o.vehicle_id is not null;
update tenants set settings = settings || jsonb_build_object('max_photos', 12 + floor(random() * 30)::int) where id % 100 = 0;
commit;
SQL
dump "$CHANGED"
echo "$STAMP_TEXT" > "$STAMP"
log "done"
