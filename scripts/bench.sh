#!/usr/bin/env bash
# Measures pg-backups against the pipelines a user would otherwise run, as ratios from the
# same run, and peak memory with /usr/bin/time -v. A benchmark, not a test: it prints figures.
#
#   scripts/bench.sh [dump|ship|verify|restore|all]
#
# Data sets (built once, kept in $BENCH_DIR between runs, on PostgreSQL 15):
#   pgbench  pgbench -i -s 100 (~1.5 GB; its dump compresses ~35:1: shows the cost of reading)
#   random   ~1 GB of random numbers, md5() text and jsonb (~3:1: shows the cost of compressing)
#   pair     two equal ~400 MB databases, for BACKUP_JOBS=2 against BACKUP_JOBS=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHAT=${1:-all}
BENCH_DIR=${BENCH_DIR:-/var/tmp/pg-backups-bench}
RUNS=${BENCH_RUNS:-3}
PG15=/usr/lib/postgresql/15/bin
PG17=${PGB_PG17_DIR:-/opt/pg-backups-test/pg17}/bin
PASSWORD=bench-password

scripts/install-deps.sh --bench
cargo build --release --quiet
BIN=$ROOT/target/release/pg-backups

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
note() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
RESULTS=$BENCH_DIR/results.txt
: > "$RESULTS"
report() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# --- servers ------------------------------------------------------------------------------
declare -A PORTS=([pgbench]=55101 [random]=55102 [pair]=55103)
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
        (cd / && as_pg "$PG15/pg_ctl" -D "$data" -l "$BENCH_DIR/$name/log" -w \
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
    for c in pgbench random pair; do
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

prepare_data
case $WHAT in
    prepare) ;;
    dump) bench_dump ;;
    all) bench_dump ;;
    *) echo "unknown benchmark $WHAT" >&2; exit 64 ;;
esac
note "results (also in $RESULTS)"
cat "$RESULTS"
