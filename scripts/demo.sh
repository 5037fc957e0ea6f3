#!/usr/bin/env bash
# The whole product on an embedded default: starts a throwaway local PostgreSQL 17 with sample
# data and a throwaway S3 server (SeaweedFS, the one the tests use, with a key it checks), then
# runs dump → ship → verify (with a restore test) → list across destinations → restore into a
# new name, shown as text for a person; the last step shows the JSON line a scheduler gets.
# Nothing outside a temporary folder is touched; the servers are stopped and the folder
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "building pg-backups …" >&2
cargo build --quiet
BIN=$PWD/target/debug/pg-backups

PGBIN=${PGB_PG17_DIR:-/opt/pg-backups-test/pg17}/bin
WORK=$(mktemp -d /tmp/pg-backups-demo.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=demo-password
export PG_BIN_DIR=$PGBIN BACKUP_DIR=$WORK/backups

WEED_PID=""
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
    [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null && wait "$WEED_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ pg-backups %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "starting a throwaway S3 server (SeaweedFS) on 127.0.0.1" >&2
mkdir -p "$WORK/s3/data"
cat > "$WORK/s3/identities.json" <<'JSON'
{"identities": [{"name": "demo", "credentials": [{"accessKey": "DEMOACCESSKEY", "secretKey": "demo-secret-key"}],
                 "actions": ["Admin", "Read", "Write", "List"]}]}
JSON
MASTER=$(free_port); S3PORT=$(free_port)
weed server -dir="$WORK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$MASTER" \
    -volume.port="$(free_port)" -filer.port="$(free_port)" -volume.max=0 -master.volumeSizeLimitMB=64 \
    -s3 -s3.port="$S3PORT" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/s3/identities.json" \
    >"$WORK/s3/log" 2>&1 &
WEED_PID=$!
for _ in $(seq 1 150); do
    echo "s3.bucket.create -name demo-backups" | weed shell -master="127.0.0.1:$MASTER" 2>/dev/null \
        | grep -q "created bucket" && break
    sleep 0.2
done
export S3_ENABLED=true S3_BUCKET=demo-backups S3_ENDPOINT=http://127.0.0.1:$S3PORT \
    S3_FORCE_PATH_STYLE=true S3_ACCESS_KEY=DEMOACCESSKEY S3_SECRET_KEY=demo-secret-key

echo "starting a throwaway PostgreSQL 17 on 127.0.0.1:$PORT (data in $WORK)" >&2
echo "$PGPASSWORD" > "$WORK/pw"; [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pw"
(cd / && as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --pwfile="$WORK/pw" \
    -A scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null)
(cd / && as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK" start >/dev/null)

psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "CREATE ROLE shop_owner LOGIN PASSWORD 'shop'" \
                 -c 'CREATE DATABASE shop OWNER shop_owner' \
                 -c 'CREATE DATABASE "Sales-2025"'
psql -d shop -c "CREATE TABLE products(id serial PRIMARY KEY, name text, price numeric);
                 INSERT INTO products(name, price)
                   SELECT 'product ' || g, round((random() * 100)::numeric, 2) FROM generate_series(1, 5000) g;
                 ALTER TABLE products OWNER TO shop_owner;"
psql -d Sales-2025 -c "CREATE TABLE orders(id int, customer text);
                       INSERT INTO orders VALUES (1, 'O''Brien'), (2, 'Zoë');"

# Text for a person (what a terminal shows by default; --output text forces it here).
step dump
"$BIN" dump --output text
step ship
"$BIN" ship --output text
step "verify latest --restore-test"
"$BIN" verify latest --restore-test --output text
step list
"$BIN" list --output text
step "restore   (RESTORE_SOURCE=s3 RESTORE_TYPE=database RESTORE_DATABASE=shop RESTORE_TARGET_DATABASE=shop_restored)"
RESTORE_SOURCE=s3 RESTORE_FOLDER=latest RESTORE_TYPE=database RESTORE_DATABASE=shop \
    RESTORE_TARGET_DATABASE=shop_restored "$BIN" restore --output text </dev/null
echo "rows in shop_restored.products: $(psql -A -t -d shop_restored -c 'SELECT count(*) FROM products')" >&2
step "prune --dry-run"
"$BIN" prune --dry-run --output text
step "check --json   (what a scheduler or monitoring reads: one JSON line, exit code 0 or 1)"
"$BIN" check --json
echo
echo "backup folder:" >&2
ls -l "$BACKUP_DIR"/*/ >&2
