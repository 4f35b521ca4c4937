#!/bin/bash
# Entrypoint of finq/postgres:16-standin (Debian's PostgreSQL 15). Mirrors the official image's
# behaviour that finq relies on:
#   - POSTGRES_PASSWORD_FILE, POSTGRES_USER_FILE, POSTGRES_DB_FILE (Docker secrets);
#   - runs as root only to fix the data directory's ownership, then re-executes as `postgres`;
#   - on first start (no PG_VERSION in $PGDATA): initdb with POSTGRES_USER as superuser and
#     POSTGRES_PASSWORD, scram-sha-256 for TCP clients (POSTGRES_HOST_AUTH_METHOD), creates
#     POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.sh|*.sql on a socket-only temporary server
#     (so a TCP pg_isready does not report ready before initialisation is over);
#   - then execs `postgres` listening on all interfaces, port 5432.
set -Eeuo pipefail

# POSTGRES_PASSWORD_FILE etc.: the value from a file (Docker secrets), as in the official image.
file_env() {
  local name="$1" file_var="${1}_FILE"
  if [ -n "${!file_var:-}" ]; then
    if [ -n "${!name:-}" ]; then echo "postgres-standin: both $name and $file_var are set" >&2; exit 1; fi
    export "$name=$(<"${!file_var}")"
  fi
  unset "$file_var"
}
for var in POSTGRES_PASSWORD POSTGRES_USER POSTGRES_DB POSTGRES_INITDB_ARGS; do file_env "$var"; done

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
export PGDATA POSTGRES_USER POSTGRES_DB POSTGRES_HOST_AUTH_METHOD

log() { echo "postgres-standin: $*" >&2; }

# `docker run IMAGE -c setting=x` means `postgres -c setting=x`.
if [ "${1:-}" != "" ] && [ "${1:0:1}" = "-" ]; then set -- postgres "$@"; fi

if [ "${1:-}" != "postgres" ]; then exec "$@"; fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    log "error: the database is uninitialised and POSTGRES_PASSWORD is not set"
    log "       (set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection unchecked)"
    exit 1
  fi
  log "initialising a new cluster in $PGDATA"
  pwfile="$(mktemp)"
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -p 5432" start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres)
  # psql interpolates :'db' / :"db" only in input it reads, not in -c.
  if [ "$POSTGRES_DB" != postgres ] &&
     [ -z "$(echo "SELECT 1 FROM pg_database WHERE datname = :'db'" | "${psql[@]}" -tA -v db="$POSTGRES_DB")" ]; then
    echo 'CREATE DATABASE :"db"' | "${psql[@]}" -v db="$POSTGRES_DB" >/dev/null
    log "created database $POSTGRES_DB"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)  log "running $f"; . "$f" ;;
      *.sql) log "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" >/dev/null ;;
      *)     [ -e "$f" ] && log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  log "initialisation complete"
fi

shift
exec postgres -c listen_addresses='*' -p 5432 "$@"
