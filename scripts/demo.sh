#!/usr/bin/env bash
# The whole product on an embedded default: starts a throwaway local PostgreSQL 17 with sample
# data and a throwaway S3 server (SeaweedFS, the one the tests use, with a key it checks), then
# runs dump → ship → verify (with a restore test) → list across destinations → restore into a
# new name, shown as text for a person; the last step shows the JSON line a scheduler gets.
# Nothing outside a temporary folder is touched; the servers are stopped and the folder
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# PG_BACKUPS_DEMO_BIN: a pg-backups binary already built (the test suite passes its own); then
# neither install-deps.sh nor cargo runs. PG_BACKUPS_DEMO_WAIT: how long a server may take to
# start (seconds, default 30) before the demo stops and shows its log.
WAIT_SECONDS=${PG_BACKUPS_DEMO_WAIT:-30}
if [ -n "${PG_BACKUPS_DEMO_BIN:-}" ]; then
    BIN=$PG_BACKUPS_DEMO_BIN
else
    scripts/install-deps.sh
    echo "building pg-backups …" >&2
    cargo build --quiet
    BIN=$PWD/target/debug/pg-backups
fi

PGBIN=${PGB_PG17_DIR:-/opt/pg-backups-test/pg17}/bin
WORK=$(mktemp -d /tmp/pg-backups-demo.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK"; fi

WEED_PID=""
cleanup() {
    local rc=$?
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    if [ -n "$WEED_PID" ]; then
        # SIGTERM takes SeaweedFS ~15 s; it holds nothing worth keeping.
        kill -KILL "$WEED_PID" 2>/dev/null || true
        wait "$WEED_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        # The servers' logs outlive a failed demo; the rest goes.
        mkdir -p "$LOGS"
        cp "$WORK"/s3/log* "$WORK/server.log" "$LOGS"/ 2>/dev/null || true
        echo "demo: failed (exit $rc); the servers' logs are kept in $LOGS" >&2
    fi
    rm -rf "$WORK"
}
LOGS=$WORK-logs
trap cleanup EXIT

fail() { echo "demo: $*" >&2; exit 1; }
step() { printf '\n\033[1m$ pg-backups %s\033[0m\n' "$*"; }
# N distinct ports p, each free with p + 10000 free too: weed listens for gRPC on its HTTP port
# + 10000 (a port above 55535 has no such partner), as tests/common/s3.rs picks them.
port_pairs() {
    python3 - "$1" <<'PY'
import socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
for _ in range(500):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p <= 50000 and p not in ports and p + 10000 not in ports and free(p + 10000):
        ports.append(p)
    if len(ports) == int(sys.argv[1]):
        print(*ports)
        sys.exit(0)
sys.exit("no free port pairs for SeaweedFS")
PY
}
# Waits at most $1 seconds for a command to succeed (a command that can hang bounds itself:
# `timeout`), and says which log to read when it never does.
wait_until() { # seconds what log command...
    local secs=$1 what=$2 log=$3
    shift 3
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "demo: $what not ready after ${secs} s; the end of its log ($log, kept in $LOGS):" >&2
            tail -n 30 "$log" >&2 2>/dev/null || true
            return 1
        fi
        if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
            echo "demo: the server of $what stopped; the end of its log ($log, kept in $LOGS):" >&2
            tail -n 30 "$log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.3
    done
}
# `weed shell` waits for good on a master that is gone: each try is cut off.
SHELL_TIMEOUT=$(( WAIT_SECONDS < 10 ? WAIT_SECONDS : 10 ))
bucket_created() {
    echo "s3.bucket.create -name demo-backups" \
        | timeout "$SHELL_TIMEOUT" weed shell -master="127.0.0.1:$MASTER" 2>&1 | grep -q "created bucket"
}

echo "starting a throwaway S3 server (SeaweedFS) on 127.0.0.1" >&2
mkdir -p "$WORK/s3/data"
cat > "$WORK/s3/identities.json" <<'JSON'
{"identities": [{"name": "demo", "credentials": [{"accessKey": "DEMOACCESSKEY", "secretKey": "demo-secret-key"}],
                 "actions": ["Admin", "Read", "Write", "List"]}]}
JSON
started=""
for attempt in 1 2 3; do
    read -r MASTER VOLUME FILER S3PORT <<<"$(port_pairs 4)"
    weed server -dir="$WORK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$MASTER" \
        -volume.port="$VOLUME" -filer.port="$FILER" -volume.max=0 -master.volumeSizeLimitMB=64 \
        -s3 -s3.port="$S3PORT" -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/s3/identities.json" \
        >"$WORK/s3/log" 2>&1 </dev/null &
    WEED_PID=$!
    # The bucket is the last thing to be ready (master, volume server, filer, S3 gateway).
    if WAIT_PID=$WEED_PID wait_until "$WAIT_SECONDS" "the S3 bucket" "$WORK/s3/log" bucket_created; then
        started=1
        break
    fi
    # A port was taken in between (another program was quicker): new ports, a clean start.
    kill -KILL "$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
    WEED_PID=""
    cp "$WORK/s3/log" "$WORK/s3/log.$attempt"
    rm -rf "$WORK/s3/data" && mkdir -p "$WORK/s3/data"
done
[ -n "$started" ] || fail "SeaweedFS did not start in 3 tries; its logs are kept in $LOGS (log, log.1, log.2)"
export S3_ENABLED=true S3_BUCKET=demo-backups S3_ENDPOINT=http://127.0.0.1:$S3PORT \
    S3_FORCE_PATH_STYLE=true S3_ACCESS_KEY=DEMOACCESSKEY S3_SECRET_KEY=demo-secret-key

read -r PORT <<<"$(port_pairs 1)"
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=demo-password
export PG_BIN_DIR=$PGBIN BACKUP_DIR=$WORK/backups
# libpq's own bound on each connection attempt (pg-backups injects 10 s when it is unset).
export PGCONNECT_TIMEOUT=10

echo "starting a throwaway PostgreSQL 17 on 127.0.0.1:$PORT (data in $WORK)" >&2
echo "$PGPASSWORD" > "$WORK/pw"; if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK/pw"; fi
(cd / && as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --pwfile="$WORK/pw" \
    -A scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null)
(cd / && as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -t "$WAIT_SECONDS" \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $WORK" start >/dev/null) \
    || { tail -n 30 "$WORK/server.log" >&2; fail "PostgreSQL did not start within $WAIT_SECONDS s; its log is above and kept in $LOGS/server.log"; }

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
