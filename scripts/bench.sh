#!/usr/bin/env bash
# Measures pg-backups against the pipelines a user would otherwise run, as ratios from the
# same run, and peak memory with /usr/bin/time -v. A benchmark, not a test: it prints figures.
#
#   scripts/bench.sh [dump|ship|direct|verify|prune|size|formats[-dump|-restore]|encryption|all]
#
# Data sets (built once, kept in $BENCH_DIR between runs, on PostgreSQL 15):
#   pgbench  pgbench -i -s 100 (~1.5 GB; its dump compresses ~35:1: shows the cost of reading)
#   random   ~1 GB of random numbers, md5() text and jsonb (~3:1: shows the cost of compressing)
#   pair     two equal ~400 MB databases, for BACKUP_JOBS=2 against BACKUP_JOBS=1
#   multi    8 tables of equal size with indexes and foreign keys (~1 GB of SQL): what parallel
#            restore gains (one big table hides it)
#
# BENCH_BIN: the binary to measure (default: the glibc release build, target/release/pg-backups,
# built first). With BENCH_BIN set nothing is built: the binary is measured as it is, e.g. the
# images' musl build (musl-gcc from musl-tools, which install-deps.sh --bench installs, compiles
# its C dependencies):
#   cargo build --release --target x86_64-unknown-linux-musl
#   BENCH_BIN=target/x86_64-unknown-linux-musl/release/pg-backups scripts/bench.sh dump
# BENCH_RUNS: hyperfine runs per command (default 3). BENCH_DIR: the data sets' folder.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
BENCH_DIR=${BENCH_DIR:-/var/tmp/pg-backups-bench}
RUNS=${BENCH_RUNS:-3}
# Verifies take a second or a few: more runs and a warm-up for a steadier ratio.
VERIFY_RUNS=$(( RUNS < 5 ? 5 : RUNS ))
PG15=/usr/lib/postgresql/15/bin
PG17=${PGB_PG17_DIR:-/opt/pg-backups-test/pg17}/bin
PASSWORD=bench-password

scripts/install-deps.sh --bench
if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$(realpath "$BENCH_BIN")
    [ -x "$BIN" ] || { echo "BENCH_BIN=$BENCH_BIN is not an executable" >&2; exit 66; }
else
    cargo build --release --quiet
    BIN=$ROOT/target/release/pg-backups
fi

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
note() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
RESULTS=$BENCH_DIR/results.txt
: > "$RESULTS"
report() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
report "binary: $BIN"

# --- servers ------------------------------------------------------------------------------
# Servers outlive this script: they must not inherit its descriptors. Run as `flock LOCK
# scripts/bench.sh`, the lock's descriptor would otherwise stay open in the clusters and hold
# the lock until they stop, and every later `flock` would wait forever.
close_inherited_fds() { local fd; for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done; }
declare -A PORTS=([pgbench]=55101 [random]=55102 [pair]=55103 [multi]=55105)
start_cluster() { # name
    local name=$1 data=$BENCH_DIR/$1/data port=${PORTS[$1]}
    if [ ! -d "$data" ]; then
        mkdir -p "$BENCH_DIR/$name"; chmod 755 "$BENCH_DIR/$name"
        echo "$PASSWORD" > "$BENCH_DIR/$name/pw"
        [ "$(id -u)" -eq 0 ] && chown -R postgres "$BENCH_DIR/$name"
        (cd / && as_pg "$PG15/initdb" -D "$data" -U postgres --pwfile="$BENCH_DIR/$name/pw" \
            -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null)
    fi
    if ! "$PG15/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        (close_inherited_fds; cd / && as_pg "$PG15/pg_ctl" -D "$data" -l "$BENCH_DIR/$name/log" -w \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $BENCH_DIR/$name -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null)
    fi
}
use() { # name: point the libpq variables at a cluster
    export PGHOST=127.0.0.1 PGPORT=${PORTS[$1]} PGUSER=postgres PGPASSWORD=$PASSWORD PG_BIN_DIR=$PG15
}
psql_q() { "$PG15/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
has_db() { [ "$(psql_q -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$1'")" = 1 ]; }

prepare_data() {
    start_cluster pgbench; use pgbench
    if ! has_db pgbench; then
        note "creating pgbench scale 100 (~1.5 GB)"
        psql_q -d postgres -c "CREATE DATABASE pgbench"
        "$PG15/pgbench" -i -s 100 -q pgbench >/dev/null 2>&1
        psql_q -d pgbench -c "VACUUM ANALYZE"
    fi
    start_cluster random; use random
    if ! has_db random; then
        note "creating ~1 GB of less compressible rows"
        psql_q -d postgres -c "CREATE DATABASE random"
        psql_q -d random -c "CREATE TABLE noise AS
            SELECT g AS id, (random() * 1e9)::bigint AS n, random() AS f, md5(g::text) AS h,
                   md5(random()::text) || md5(random()::text) AS t,
                   jsonb_build_object('a', random(), 'b', md5(random()::text), 'c', g) AS j
            FROM generate_series(1, 4500000) g"
        psql_q -d random -c "VACUUM ANALYZE"
    fi
    start_cluster pair; use pair
    if ! has_db pair_a; then
        note "creating two equal ~400 MB databases"
        psql_q -d postgres -c "CREATE DATABASE pair_a"
        psql_q -d pair_a -c "CREATE TABLE noise AS
            SELECT g AS id, random() AS f, md5(g::text) AS h, md5(random()::text) AS t
            FROM generate_series(1, 4000000) g"
        psql_q -d postgres -c "CREATE DATABASE pair_b TEMPLATE pair_a"
    fi
    start_cluster multi; use multi
    if ! has_db multi; then
        note "creating 8 tables with indexes and foreign keys (~1 GB of SQL)"
        # Built under another name and renamed when whole, so a stopped run starts over.
        psql_q -d postgres -c "DROP DATABASE IF EXISTS multi_build"
        psql_q -d postgres -c "CREATE DATABASE multi_build"
        psql_q -d multi_build -c "CREATE TABLE t1 (id bigint PRIMARY KEY, parent bigint, code text, amount numeric, at timestamptz, note text)"
        psql_q -d multi_build -c "INSERT INTO t1 SELECT g, NULL, md5(g::text), (random() * 1e6)::numeric(12,2), now() - g * interval '1 second', md5(random()::text) || md5(random()::text) FROM generate_series(1, 1300000) g"
        for i in 2 3 4 5 6 7 8; do
            psql_q -d multi_build -c "CREATE TABLE t$i (id bigint PRIMARY KEY, parent bigint REFERENCES t1 (id), code text, amount numeric, at timestamptz, note text)"
            psql_q -d multi_build -c "INSERT INTO t$i SELECT g, 1 + (g::bigint * 7919) % 1300000, md5((g + $i)::text), (random() * 1e6)::numeric(12,2), now() - g * interval '1 second', md5(random()::text) || md5(random()::text) FROM generate_series(1, 1300000) g"
        done
        for i in 1 2 3 4 5 6 7 8; do
            psql_q -d multi_build -c "CREATE INDEX t${i}_code ON t$i (code)" -c "CREATE INDEX t${i}_at ON t$i (at)"
        done
        psql_q -d multi_build -c "VACUUM ANALYZE"
        psql_q -d postgres -c "ALTER DATABASE multi_build RENAME TO multi"
    fi
    for c in pgbench random pair multi; do
        use "$c"; report "$c: $(psql_q -d postgres -c "SELECT string_agg(datname || ' ' || pg_size_pretty(pg_database_size(datname)), ', ') FROM pg_database WHERE datname NOT LIKE 'template%' AND datname <> 'postgres'")"
    done
}

mean() { # hyperfine json → mean seconds of command N
    python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['results'][int(sys.argv[2])]['mean'])" "$1" "$2"
}
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
peak_rss_mib() { # command… → peak RSS of the command in MiB
    /usr/bin/time -v "$@" 2>"$BENCH_DIR/time.txt" >/dev/null || { cat "$BENCH_DIR/time.txt" >&2; return 1; }
    awk -F: '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$BENCH_DIR/time.txt"
}

bench_dump() {
    local OUT=$BENCH_DIR/out
    for set in pgbench random; do
        use "$set"
        note "dump: $set"
        export BACKUP_DIR=$OUT/pgb BACKUP_COMPRESSION_LEVEL=6 BACKUP_JOBS=2
        hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/dump-$set.json" \
            --prepare "rm -rf $OUT && mkdir -p $OUT/bash $OUT/floor" \
            -n "bash sequence" \
            "$PG15/pg_dumpall | gzip -6 > $OUT/bash/cluster.sql.gz && $PG15/pg_dumpall -g | gzip -6 > $OUT/bash/globals.sql.gz && for db in postgres $set; do $PG15/pg_dump --create \$db | gzip -6 > $OUT/bash/db_\$db.sql.gz; done" \
            -n "pg_dump | gzip -6 (floor)" \
            "$PG15/pg_dump $set | gzip -6 > $OUT/floor/$set.sql.gz" \
            -n "pg-backups dump" \
            "$BIN dump >/dev/null 2>&1"
        local bash floor ours
        bash=$(mean "$BENCH_DIR/dump-$set.json" 0)
        floor=$(mean "$BENCH_DIR/dump-$set.json" 1)
        ours=$(mean "$BENCH_DIR/dump-$set.json" 2)
        rm -rf "$OUT"; mkdir -p "$OUT"
        local rss; rss=$(peak_rss_mib "$BIN" dump)
        report "dump $set: pg-backups ${ours}s, bash sequence ${bash}s, floor ${floor}s;" \
               "ratio vs bash $(ratio "$ours" "$bash") (target <= 0.5), vs floor $(ratio "$ours" "$floor") (target <= 1.1), peak RSS ${rss} MiB (target <= 64)"
        rm -rf "$OUT"
    done
    use pair
    note "dump: two equal databases, BACKUP_JOBS=1 against 2"
    export BACKUP_DIR=$OUT/pgb
    hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/dump-jobs.json" --prepare "rm -rf $OUT" \
        -n "BACKUP_JOBS=1" "BACKUP_JOBS=1 $BIN dump >/dev/null 2>&1" \
        -n "BACKUP_JOBS=2" "BACKUP_JOBS=2 $BIN dump >/dev/null 2>&1"
    local j1 j2; j1=$(mean "$BENCH_DIR/dump-jobs.json" 0); j2=$(mean "$BENCH_DIR/dump-jobs.json" 1)
    report "dump jobs: BACKUP_JOBS=1 ${j1}s, BACKUP_JOBS=2 ${j2}s: speed-up $(ratio "$j1" "$j2")x (target >= 1.3)"
    rm -rf "$OUT"
}

# --- ship ---------------------------------------------------------------------------------
WEED_PID=""
stop_weed() { [ -n "$WEED_PID" ] && kill -9 "$WEED_PID" 2>/dev/null; WEED_PID=""; }
trap stop_weed EXIT
start_weed() {
    local dir=$BENCH_DIR/weed
    rm -rf "$dir"; mkdir -p "$dir/data"
    cat > "$dir/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"AKIDBENCH","secretKey":"bench-secret-key"}],"actions":["Admin","Read","Write","List"]}]}
JSON
    weed server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=19433 \
        -volume.port=18180 -filer.port=18988 -volume.max=0 -master.volumeSizeLimitMB=1024 \
        -s3 -s3.port=18433 -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
        >"$dir/log" 2>&1 &
    WEED_PID=$!
    export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1
    for _ in $(seq 1 150); do aws --endpoint-url http://127.0.0.1:18433 s3 ls >/dev/null 2>&1 && break; sleep 0.2; done
    aws --endpoint-url http://127.0.0.1:18433 s3 mb s3://bench >/dev/null
}
make_folder() { # dir name big-file-command: a folder with one big file, small ones and a manifest
    local dir=$1/$2; mkdir -p "$dir"
    eval "$3" > "$dir/postgres_db_big.sql.gz"
    head -c 2000000 /dev/urandom > "$dir/postgres_cluster.sql.gz"
    head -c 5000 /dev/urandom > "$dir/postgres_globals.sql.gz"
    head -c 300000 /dev/urandom > "$dir/postgres_db_small.sql.gz"
    python3 - "$dir" "$2" <<'PY'
import hashlib, json, os, sys
d, name = sys.argv[1], sys.argv[2]
files = []
for f in sorted(os.listdir(d)):
    h = hashlib.sha256()
    with open(os.path.join(d, f), 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b''):
            h.update(chunk)
    kind = 'cluster' if 'cluster' in f else 'globals' if 'globals' in f else 'database'
    e = {"name": f, "kind": kind, "bytes": os.path.getsize(os.path.join(d, f)), "sha256": h.hexdigest(), "sql_bytes": 0}
    if kind == 'database':
        e["database"] = f[len("postgres_db_"):-len(".sql.gz")]
    files.append(e)
m = {"format": 1, "tool": "pg-backups", "tool_version": "bench", "folder": name, "status": "complete",
     "started_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:00:00Z",
     "server": {"host": "bench", "port": 5432, "version": "15", "version_num": 150000},
     "pg_dump_version": "15", "compression": "gzip", "compression_level": 6, "databases": [], "files": files, "failed": []}
with open(os.path.join(d, "manifest.json"), "w") as fh:
    json.dump(m, fh)
PY
}

bench_ship() {
    note "ship: a folder with a 1 GB file and small ones, to SeaweedFS on loopback"
    start_weed
    local EP=http://127.0.0.1:18433 DATA=$BENCH_DIR/ship1g
    rm -rf "$DATA"; mkdir -p "$DATA"
    make_folder "$DATA" 20250101_000000 "head -c 1073741824 /dev/urandom"
    export BACKUP_DIR=$DATA S3_ENABLED=true S3_BUCKET=bench S3_ENDPOINT=$EP S3_FORCE_PATH_STYLE=true \
        S3_ACCESS_KEY=AKIDBENCH S3_SECRET_KEY=bench-secret-key S3_PREFIX=pgb
    hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/ship.json" \
        --prepare "aws --endpoint-url $EP s3 rm --recursive --quiet s3://bench/" \
        -n "aws s3 cp --recursive" "aws --endpoint-url $EP s3 cp --recursive --quiet $DATA/20250101_000000 s3://bench/aws/20250101_000000/" \
        -n "pg-backups ship" "$BIN ship >/dev/null 2>&1"
    local aws ours; aws=$(mean "$BENCH_DIR/ship.json" 0); ours=$(mean "$BENCH_DIR/ship.json" 1)
    aws --endpoint-url $EP s3 rm --recursive --quiet s3://bench/
    local rss1; rss1=$(peak_rss_mib "$BIN" ship)
    hyperfine --runs 5 --export-json "$BENCH_DIR/ship-again.json" -n "second ship" "$BIN ship >/dev/null 2>&1"
    local again bytes; again=$(mean "$BENCH_DIR/ship-again.json" 0)
    bytes=$("$BIN" ship 2>/dev/null | python3 -c 'import json,sys; print(sum(d["bytes"] for d in json.load(sys.stdin)["destinations"]))')
    report "ship 1 GB: pg-backups ${ours}s, aws s3 cp ${aws}s: ratio $(ratio "$ours" "$aws") (target <= 1.0); peak RSS ${rss1} MiB (target <= 128)"
    report "ship again: ${again}s, ${bytes} bytes transferred (target < 2 s, 0 bytes)"
    rm -rf "$DATA"
    note "ship: a 5 GB generated file"
    DATA=$BENCH_DIR/ship5g; rm -rf "$DATA"; mkdir -p "$DATA"
    make_folder "$DATA" 20250102_000000 "head -c 5368709120 /dev/zero"
    export BACKUP_DIR=$DATA
    aws --endpoint-url $EP s3 rm --recursive --quiet s3://bench/
    local rss5; rss5=$(peak_rss_mib "$BIN" ship)
    report "ship 5 GB: peak RSS ${rss5} MiB (target <= 128)"
    rm -rf "$DATA"
    stop_weed
    unset BACKUP_DIR S3_ENABLED S3_BUCKET S3_ENDPOINT S3_FORCE_PATH_STYLE S3_ACCESS_KEY S3_SECRET_KEY S3_PREFIX
}

# --- dump straight to S3 (BACKUP_LOCAL_COPY=false) ------------------------------------------
bench_direct() {
    start_weed
    local EP=http://127.0.0.1:18433 OUT=$BENCH_DIR/direct
    export S3_ENABLED=true S3_BUCKET=bench S3_ENDPOINT=$EP S3_FORCE_PATH_STYLE=true \
        S3_ACCESS_KEY=AKIDBENCH S3_SECRET_KEY=bench-secret-key BACKUP_COMPRESSION_LEVEL=6 BACKUP_JOBS=2
    for set in random pgbench; do
        use "$set"
        note "direct: $set, dump straight to S3 against dump + ship"
        hyperfine --show-output --runs "$RUNS" --export-json "$BENCH_DIR/direct-$set.json" \
            --prepare "rm -rf $OUT && mkdir -p $OUT && aws --endpoint-url $EP s3 rm --recursive --quiet s3://bench/" \
            -n "dump + ship" "BACKUP_DIR=$OUT/local S3_PREFIX=shipped $BIN dump >/dev/null 2>&1 && BACKUP_DIR=$OUT/local S3_PREFIX=shipped $BIN ship >/dev/null 2>&1" \
            -n "dump, BACKUP_LOCAL_COPY=false" "BACKUP_DIR=$OUT/direct S3_PREFIX=direct BACKUP_LOCAL_COPY=false $BIN dump >/dev/null 2>&1"
        local both direct; both=$(mean "$BENCH_DIR/direct-$set.json" 0); direct=$(mean "$BENCH_DIR/direct-$set.json" 1)
        rm -rf "$OUT"; mkdir -p "$OUT"
        local rss; rss=$(BACKUP_DIR=$OUT/direct S3_PREFIX=direct BACKUP_LOCAL_COPY=false peak_rss_mib "$BIN" dump)
        # The part size planned for a 100 GiB database (31 MiB at S3_MAX_PARTS=10000), forced
        # on this one: memory depends on the part size, not on the database.
        local rss100; rss100=$(BACKUP_DIR=$OUT/direct S3_PREFIX=direct BACKUP_LOCAL_COPY=false S3_PART_SIZE=31MiB peak_rss_mib "$BIN" dump)
        report "direct dump $set: ${direct}s vs dump + ship ${both}s: ratio $(ratio "$direct" "$both") (target <= 1.1);" \
               "peak RSS ${rss} MiB, with 100 GiB parts (31 MiB) ${rss100} MiB (target <= 256)"
        rm -rf "$OUT"
    done
    aws --endpoint-url $EP s3 rm --recursive --quiet s3://bench/
    stop_weed
    unset S3_ENABLED S3_BUCKET S3_ENDPOINT S3_FORCE_PATH_STYLE S3_ACCESS_KEY S3_SECRET_KEY BACKUP_COMPRESSION_LEVEL BACKUP_JOBS
}

# --- verify and restore --------------------------------------------------------------------
PORTS[target]=55104
bench_verify_restore() {
    start_cluster target
    for set in pgbench random; do
        local OUT=$BENCH_DIR/vr-$set
        use "$set"
        if [ ! -f "$OUT/done" ]; then
            rm -rf "$OUT"
            BACKUP_DIR=$OUT BACKUP_DATABASES=$set "$BIN" dump >/dev/null 2>&1
            touch "$OUT/done"
        fi
        local folder; folder=$(ls -d "$OUT"/2*/ | head -1)
        note "verify: $set"
        hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/verify-$set.json" \
            -n "sha256sum && gzip -t" "sha256sum $folder*.sql.gz >/dev/null && gzip -t $folder*.sql.gz" \
            -n "pg-backups verify" "BACKUP_DIR=$OUT $BIN verify latest >/dev/null 2>&1"
        local base ours rss
        base=$(mean "$BENCH_DIR/verify-$set.json" 0); ours=$(mean "$BENCH_DIR/verify-$set.json" 1)
        rss=$(BACKUP_DIR=$OUT peak_rss_mib "$BIN" verify latest)
        report "verify $set: pg-backups ${ours}s, sha256sum && gzip -t ${base}s: ratio $(ratio "$ours" "$base") (target <= 0.7); peak RSS ${rss} MiB (target <= 64)"

        note "restore one database: $set"
        use target
        local file="$folder/postgres_db_$set.sql.gz"
        local drop="$PG15/psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS $set WITH (FORCE)'"
        hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/restore-$set.json" --prepare "$drop" \
            -n "gunzip -c | psql" "gunzip -c $file | $PG15/psql -X -q -d postgres >/dev/null 2>&1" \
            -n "pg-backups restore" "BACKUP_DIR=$OUT RESTORE_SOURCE=local RESTORE_FOLDER=latest RESTORE_TYPE=database RESTORE_DATABASE=$set $BIN restore >/dev/null 2>&1 </dev/null"
        base=$(mean "$BENCH_DIR/restore-$set.json" 0); ours=$(mean "$BENCH_DIR/restore-$set.json" 1)
        report "restore $set: pg-backups ${ours}s (verification included), gunzip -c | psql ${base}s: ratio $(ratio "$ours" "$base") (target <= 1.1)"
    done
    note "restore from S3: peak memory"
    start_weed
    local OUT=$BENCH_DIR/vr-random
    use random
    BACKUP_DIR=$OUT S3_ENABLED=true S3_BUCKET=bench S3_ENDPOINT=http://127.0.0.1:18433 \
        S3_FORCE_PATH_STYLE=true S3_ACCESS_KEY=AKIDBENCH S3_SECRET_KEY=bench-secret-key "$BIN" ship >/dev/null 2>&1
    use target
    $PG15/psql -X -q -d postgres -c "DROP DATABASE IF EXISTS random WITH (FORCE)"
    local rss
    rss=$(BACKUP_DIR=$OUT S3_ENABLED=true S3_BUCKET=bench S3_ENDPOINT=http://127.0.0.1:18433 \
        S3_FORCE_PATH_STYLE=true S3_ACCESS_KEY=AKIDBENCH S3_SECRET_KEY=bench-secret-key \
        RESTORE_SOURCE=s3 RESTORE_FOLDER=latest RESTORE_TYPE=database RESTORE_DATABASE=random \
        RESTORE_DIR=$BENCH_DIR peak_rss_mib "$BIN" restore </dev/null)
    report "restore from S3 (random, $(du -h "$OUT"/2*/postgres_db_random.sql.gz | cut -f1)): peak RSS ${rss} MiB (target <= 128)"
    stop_weed
}

# --- prune and check against 2,000 folders at S3 --------------------------------------------
bench_prune() {
    note "prune and check: 2,000 folders at S3"
    start_weed
    local TREE=$BENCH_DIR/tree EP=http://127.0.0.1:18433
    rm -rf "$TREE"; mkdir -p "$TREE"
    python3 - "$TREE" <<'PY'
import datetime, hashlib, json, os, sys
root = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
for i in range(2000):
    t = now - datetime.timedelta(hours=1 + i)
    name = t.strftime("%Y%m%d_%H%M%S")
    os.makedirs(os.path.join(root, name))
    data = os.urandom(200)
    with open(os.path.join(root, name, "postgres_globals.sql.gz"), "wb") as f:
        f.write(data)
    m = {"format": 1, "tool": "pg-backups", "tool_version": "bench", "folder": name, "status": "complete",
         "started_at": t.isoformat().replace("+00:00", "Z"), "finished_at": t.isoformat().replace("+00:00", "Z"),
         "server": {"host": "bench", "port": 5432, "version": "15", "version_num": 150000},
         "pg_dump_version": "15", "compression": "gzip", "compression_level": 6, "databases": [],
         "files": [{"name": "postgres_globals.sql.gz", "kind": "globals", "bytes": 200,
                    "sha256": hashlib.sha256(data).hexdigest(), "sql_bytes": 0}], "failed": []}
    with open(os.path.join(root, name, "manifest.json"), "w") as f:
        json.dump(m, f)
PY
    aws --endpoint-url $EP s3 cp --recursive --quiet "$TREE" s3://bench/many/
    local EMPTY=$BENCH_DIR/empty; rm -rf "$EMPTY"; mkdir -p "$EMPTY"
    export BACKUP_DIR=$EMPTY S3_ENABLED=true S3_BUCKET=bench S3_ENDPOINT=$EP S3_FORCE_PATH_STYLE=true \
        S3_ACCESS_KEY=AKIDBENCH S3_SECRET_KEY=bench-secret-key S3_PREFIX=many S3_RETENTION_DAYS=30
    # check exits 1 here (the empty local BACKUP_DIR has no backup): -i keeps the timing.
    hyperfine -i --runs 3 --export-json "$BENCH_DIR/check2000.json" \
        -n "check" "$BIN check --max-age 2d >/dev/null 2>&1" \
        -n "prune --dry-run" "$BIN prune --dry-run >/dev/null 2>&1"
    local check dry; check=$(mean "$BENCH_DIR/check2000.json" 0); dry=$(mean "$BENCH_DIR/check2000.json" 1)
    local start end deleted
    start=$(date +%s.%N)
    deleted=$("$BIN" prune 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(len(x.get("deleted") or []) for x in d["destinations"]))')
    end=$(date +%s.%N)
    report "2,000 folders at S3: check ${check}s, prune --dry-run ${dry}s, prune $(python3 -c "print('%.2f' % ($end - $start))")s deleting ${deleted} folders (target < 10 s)"
    unset BACKUP_DIR S3_ENABLED S3_BUCKET S3_ENDPOINT S3_FORCE_PATH_STYLE S3_ACCESS_KEY S3_SECRET_KEY S3_PREFIX S3_RETENTION_DAYS
    stop_weed
    rm -rf "$TREE"
}

# --- formats: zstd and custom (pg_restore -j) ----------------------------------------------
folder_bytes() { du -sb "$1" | cut -f1; }
mib() { python3 -c "import sys; print('%.0f' % (int(sys.argv[1]) / 1048576))" "$1"; }
bench_formats() { bench_formats_dump; bench_formats_restore; }
bench_formats_dump() {
    local OUT=$BENCH_DIR/fmt
    for set in random pgbench; do
        use "$set"
        note "dump formats: $set"
        export BACKUP_COMPRESSION_LEVEL=6 BACKUP_JOBS=2
        hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/fmt-$set.json" \
            --prepare "rm -rf $OUT && mkdir -p $OUT" \
            -n "pg_dump --create > /dev/null (read floor)" "$PG15/pg_dump --create $set > /dev/null" \
            -n "pg_dump -Fc alone" "$PG15/pg_dump -Fc $set > $OUT/alone.dump" \
            -n "pg-backups dump gzip-6" "BACKUP_DIR=$OUT/gzip $BIN dump >/dev/null 2>&1" \
            -n "pg-backups dump zstd" "BACKUP_DIR=$OUT/zstd BACKUP_COMPRESSION=zstd BACKUP_COMPRESSION_LEVEL=3 $BIN dump >/dev/null 2>&1" \
            -n "pg-backups dump custom" "BACKUP_DIR=$OUT/custom BACKUP_FORMAT=custom $BIN dump >/dev/null 2>&1"
        local floor alone gz zs cu
        floor=$(mean "$BENCH_DIR/fmt-$set.json" 0); alone=$(mean "$BENCH_DIR/fmt-$set.json" 1)
        gz=$(mean "$BENCH_DIR/fmt-$set.json" 2); zs=$(mean "$BENCH_DIR/fmt-$set.json" 3)
        cu=$(mean "$BENCH_DIR/fmt-$set.json" 4)
        rm -rf "$OUT"; mkdir -p "$OUT"
        local rz rc
        rz=$(BACKUP_DIR=$OUT/zstd BACKUP_COMPRESSION=zstd BACKUP_COMPRESSION_LEVEL=3 peak_rss_mib "$BIN" dump)
        rc=$(BACKUP_DIR=$OUT/custom BACKUP_FORMAT=custom peak_rss_mib "$BIN" dump)
        BACKUP_DIR=$OUT/gzip "$BIN" dump >/dev/null 2>&1
        local zf gf
        zf=$(ls "$OUT"/zstd/2*/postgres_db_"$set".sql.zst); gf=$(ls "$OUT"/gzip/2*/postgres_db_"$set".sql.gz)
        report "dump $set zstd: ${zs}s vs read floor ${floor}s: ratio $(ratio "$zs" "$floor") (target <= $([ "$set" = random ] && echo 1.15 || echo 1.05)); gzip-6 ${gz}s: ratio $(ratio "$gz" "$floor");" \
               "file $(mib "$(stat -c %s "$zf")") MiB zstd vs $(mib "$(stat -c %s "$gf")") MiB gzip-6; peak RSS ${rz} MiB (target <= 64)"
        report "dump $set custom: ${cu}s vs pg_dump -Fc alone ${alone}s: ratio $(ratio "$cu" "$alone") (target <= 1.1); peak RSS ${rc} MiB (target <= 64)"
        hyperfine --warmup 1 --runs "$VERIFY_RUNS" --export-json "$BENCH_DIR/fmt-verify-$set.json" \
            -n "verify gzip folder" "BACKUP_DIR=$OUT/gzip $BIN verify latest >/dev/null 2>&1" \
            -n "verify zstd folder" "BACKUP_DIR=$OUT/zstd $BIN verify latest >/dev/null 2>&1"
        local vg vz; vg=$(mean "$BENCH_DIR/fmt-verify-$set.json" 0); vz=$(mean "$BENCH_DIR/fmt-verify-$set.json" 1)
        report "verify $set: zstd folder ${vz}s, gzip folder ${vg}s: ratio $(ratio "$vz" "$vg") (target <= 0.5)"
        rm -rf "$OUT"
        unset BACKUP_COMPRESSION_LEVEL BACKUP_JOBS
    done
}
bench_formats_restore() {
    note "restore formats: multi (8 tables, indexes, foreign keys)"
    start_cluster target
    use multi
    local M=$BENCH_DIR/fmt-multi
    if [ ! -f "$M/done" ]; then
        rm -rf "$M"
        BACKUP_DIR=$M/plain BACKUP_DATABASES=multi "$BIN" dump >/dev/null 2>&1
        BACKUP_DIR=$M/custom BACKUP_DATABASES=multi BACKUP_FORMAT=custom "$BIN" dump >/dev/null 2>&1
        touch "$M/done"
    fi
    local plain custom
    plain=$(ls "$M"/plain/2*/postgres_db_multi.sql.gz); custom=$(ls "$M"/custom/2*/postgres_db_multi.dump)
    use target
    local drop="$PG15/psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS multi WITH (FORCE)'"
    local r="RESTORE_SOURCE=local RESTORE_FOLDER=latest RESTORE_TYPE=database RESTORE_DATABASE=multi"
    hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/fmt-restore.json" --prepare "$drop" \
        -n "gunzip -c | psql" "gunzip -c $plain | $PG15/psql -X -q -d postgres >/dev/null 2>&1" \
        -n "pg_restore -C (one job)" "$PG15/pg_restore -C -d postgres $custom >/dev/null 2>&1" \
        -n "pg-backups restore plain" "BACKUP_DIR=$M/plain $r $BIN restore >/dev/null 2>&1 </dev/null" \
        -n "pg-backups restore custom RESTORE_JOBS=1" "BACKUP_DIR=$M/custom $r RESTORE_JOBS=1 $BIN restore >/dev/null 2>&1 </dev/null" \
        -n "pg-backups restore custom RESTORE_JOBS=2" "BACKUP_DIR=$M/custom $r RESTORE_JOBS=2 $BIN restore >/dev/null 2>&1 </dev/null"
    local gp pr op o1 o2
    gp=$(mean "$BENCH_DIR/fmt-restore.json" 0); pr=$(mean "$BENCH_DIR/fmt-restore.json" 1)
    op=$(mean "$BENCH_DIR/fmt-restore.json" 2); o1=$(mean "$BENCH_DIR/fmt-restore.json" 3)
    o2=$(mean "$BENCH_DIR/fmt-restore.json" 4)
    eval "$drop"
    local rr; rr=$(BACKUP_DIR=$M/custom RESTORE_SOURCE=local RESTORE_FOLDER=latest RESTORE_TYPE=database \
        RESTORE_DATABASE=multi RESTORE_JOBS=2 peak_rss_mib "$BIN" restore </dev/null)
    report "restore multi: custom RESTORE_JOBS=2 ${o2}s vs gunzip -c | psql ${gp}s: ratio $(ratio "$o2" "$gp") (target <= 0.75), verification included; peak RSS ${rr} MiB"
    report "restore multi: custom RESTORE_JOBS=1 ${o1}s vs pg_restore ${pr}s: ratio $(ratio "$o1" "$pr") (target <= 1.05); plain ${op}s vs gunzip -c | psql: ratio $(ratio "$op" "$gp") (target <= 1.1)"
}

# --- encryption (age) -------------------------------------------------------------------------
bench_encryption() {
    local OUT=$BENCH_DIR/enc KEY=$BENCH_DIR/age-key.txt
    [ -f "$KEY" ] || age-keygen -o "$KEY" 2>/dev/null
    local RECIPIENT; RECIPIENT=$(age-keygen -y "$KEY")
    for set in pgbench random; do
        use "$set"
        note "encryption: $set"
        export BACKUP_COMPRESSION_LEVEL=6 BACKUP_JOBS=2
        hyperfine --runs "$RUNS" --export-json "$BENCH_DIR/enc-$set.json" \
            --prepare "rm -rf $OUT && mkdir -p $OUT" \
            -n "dump" "BACKUP_DIR=$OUT/clear $BIN dump >/dev/null 2>&1" \
            -n "dump with AGE_RECIPIENTS" "BACKUP_DIR=$OUT/age AGE_RECIPIENTS=$RECIPIENT $BIN dump >/dev/null 2>&1"
        local clear sealed; clear=$(mean "$BENCH_DIR/enc-$set.json" 0); sealed=$(mean "$BENCH_DIR/enc-$set.json" 1)
        rm -rf "$OUT"; mkdir -p "$OUT"
        local rss; rss=$(BACKUP_DIR=$OUT/age AGE_RECIPIENTS=$RECIPIENT peak_rss_mib "$BIN" dump)
        BACKUP_DIR=$OUT/clear "$BIN" dump >/dev/null 2>&1
        hyperfine --warmup 1 --runs "$VERIFY_RUNS" --export-json "$BENCH_DIR/enc-verify-$set.json" \
            -n "verify" "BACKUP_DIR=$OUT/clear $BIN verify latest >/dev/null 2>&1" \
            -n "verify with AGE_IDENTITY_FILE" "BACKUP_DIR=$OUT/age AGE_IDENTITY_FILE=$KEY $BIN verify latest >/dev/null 2>&1"
        local vc va; vc=$(mean "$BENCH_DIR/enc-verify-$set.json" 0); va=$(mean "$BENCH_DIR/enc-verify-$set.json" 1)
        report "encrypted dump $set: ${sealed}s vs ${clear}s clear: ratio $(ratio "$sealed" "$clear") (target <= 1.15); peak RSS ${rss} MiB (target <= 64)"
        report "encrypted verify $set: ${va}s vs ${vc}s clear: ratio $(ratio "$va" "$vc") (target <= 1.2)"
        rm -rf "$OUT"
        unset BACKUP_COMPRESSION_LEVEL BACKUP_JOBS
    done
}

bench_size() {
    local bytes; bytes=$(stat -c %s "$BIN")
    report "release binary: $(python3 -c "print('%.1f' % ($bytes / 1048576))") MiB stripped (target <= 25)"
}

prepare_data
case $WHAT in
    prepare) ;;
    dump) bench_dump ;;
    ship) bench_ship ;;
    direct) bench_direct ;;
    verify|restore) bench_verify_restore ;;
    prune|check) bench_prune ;;
    size) bench_size ;;
    formats) bench_formats ;;
    formats-dump) bench_formats_dump ;;
    formats-restore) bench_formats_restore ;;
    encryption) bench_encryption ;;
    all) bench_size; bench_dump; bench_ship; bench_direct; bench_verify_restore; bench_prune; bench_formats; bench_encryption ;;
    *) echo "unknown benchmark $WHAT" >&2; exit 64 ;;
esac
note "results (also in $RESULTS)"
cat "$RESULTS"
