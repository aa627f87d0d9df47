#!/usr/bin/env bash
# The servers tests/connectors drives for real, installed where they are missing:
# Debian's PostgreSQL (initdb, pg_ctl) and Azurite (npm, into .azurite/, gitignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
if [ ! -x .azurite/node_modules/.bin/azurite-blob ]; then
    if ! command -v npm >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq nodejs npm >/dev/null
    fi
    npm install --silent --no-audit --no-fund --prefix .azurite azurite@3 >/dev/null
fi
