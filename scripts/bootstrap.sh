#!/usr/bin/env bash
# Install what certsmith's demo and tests need on a Debian machine, then a virtualenv.
# Idempotent: system packages are installed only when missing; the venv is reused.
set -euo pipefail

VENV=${VENV:-.venv}
PACKAGES=(pebble bind9 openssl ca-certificates python3-venv systemd)
COMMANDS=(pebble pebble-challtestsrv named openssl systemd-analyze)

missing=0
for cmd in "${COMMANDS[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
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
# Debian starts named as a service on install; the tests run their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl stop named >/dev/null 2>&1 || true; fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: certsmith needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.certsmith-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
