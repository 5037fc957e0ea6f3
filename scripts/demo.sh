#!/usr/bin/env bash
# The main job on an embedded default: starts a throwaway local PostgreSQL 17 with sample
# data and runs dump → verify (with a restore test) → restore into a new name → list,
# showing each JSON result. Nothing outside a temporary folder is
# touched; the server is stopped and the folder removed at the end.
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

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ pg-backups %s\033[0m\n' "$*"; }

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

step dump
"$BIN" dump --pretty
step "verify latest --restore-test"
"$BIN" verify latest --restore-test --pretty
step "restore   (RESTORE_TYPE=database RESTORE_DATABASE=shop RESTORE_TARGET_DATABASE=shop_restored)"
RESTORE_SOURCE=local RESTORE_FOLDER=latest RESTORE_TYPE=database RESTORE_DATABASE=shop \
    RESTORE_TARGET_DATABASE=shop_restored "$BIN" restore --pretty </dev/null
echo "rows in shop_restored.products: $(psql -A -t -d shop_restored -c 'SELECT count(*) FROM products')" >&2
step list
"$BIN" list --pretty
echo
echo "backup folder:" >&2
ls -l "$BACKUP_DIR"/*/ >&2
