#!/usr/bin/env bash
# Start a local PostgreSQL 15 server for fpgaprint's database tests (run as root).
#
# - installs postgresql-15 with apt-get only when it is absent;
# - creates the cluster 15/main if missing and starts it (listens on 127.0.0.1);
# - creates the role and database "fpgaprint_test" (password "fpgaprint_test") if missing;
# - writes the SQLAlchemy URL to build/pg_url (override with FPGAPRINT_PG_URL_FILE).
#
# Tests read FPGAPRINT_TEST_PG_URL if set, else build/pg_url; without either, or with no server
# reachable, the PostgreSQL tests are skipped with the reason. Idempotent: a second run only
# checks the server is ready and rewrites the same URL. Exports nothing.
set -euo pipefail

VERSION=15
CLUSTER=main
NAME=fpgaprint_test
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${FPGAPRINT_PG_URL_FILE:-$ROOT/build/pg_url}"

if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: run as root (starts a system PostgreSQL cluster)" >&2
    exit 2
fi

if ! [ -x "/usr/lib/postgresql/$VERSION/bin/postgres" ] \
    || ! command -v pg_ctlcluster >/dev/null; then
    echo "postgres.sh: installing postgresql-$VERSION" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$VERSION" >/dev/null
fi

if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'
then
    pg_createcluster "$VERSION" "$CLUSTER" >/dev/null
fi

read -r PORT STATUS < <(pg_lsclusters -h |
    awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $3, $4}')
if [ "$STATUS" != "online" ]; then
    pg_ctlcluster "$VERSION" "$CLUSTER" start
fi

for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || {
    echo "postgres.sh: server on 127.0.0.1:$PORT not ready" >&2
    exit 3
}

psql_admin() { su postgres -c "psql -p $PORT -qtAX -v ON_ERROR_STOP=1 -c \"$1\""; }

if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$NAME'")" != "1" ]; then
    psql_admin "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='$NAME'")" != "1" ]; then
    psql_admin "CREATE DATABASE $NAME OWNER $NAME"
fi

URL="postgresql+psycopg://$NAME:$NAME@127.0.0.1:$PORT/$NAME"
mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp "$OUT.XXXXXX")"
echo "$URL" > "$TMP"
mv "$TMP" "$OUT"
echo "$URL"
