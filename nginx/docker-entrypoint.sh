#!/bin/sh
# shellcheck disable=SC2016  # envsubst takes literal ${VAR} lists
# Entrypoint of the compose `nginx` service, for the official image (nginx >= 1.27.3) and for
# Debian's nginx 1.22 (finq/nginx:standin) alike. POSIX sh; needs envsubst, getent and awk.
#
#   docker-entrypoint.sh                  render the configuration, then run nginx (foreground)
#   docker-entrypoint.sh nginx ARGS...    same, with these nginx arguments
#   docker-entrypoint.sh healthcheck      GET /nginx-health (the container's health check)
#   docker-entrypoint.sh render           render only (prints the mode), for debugging
#
# 0. The public listeners: plain HTTP on LISTEN_PORT (listen.plain.template), or, when
#    TLS_CERT_FILE and TLS_KEY_FILE are set, HTTPS on TLS_PORT (listen.tls.template) and a
#    redirect to https://...:TLS_PUBLIC_PORT on LISTEN_PORT (redirect.tls.template).
# 1. finq.conf.template -> /etc/nginx/conf.d/finq.conf with envsubst, substituting exactly the
#    variables its header lists (nginx's own $variables stay untouched).
# 2. The API upstream, by what this nginx can do (NGINX_UPSTREAM_MODE=auto|resolve|static):
#    - resolve (nginx >= 1.27.3): upstream.resolve.template, `server fastapi-app:8000 resolve`
#      with Docker's resolver: nginx itself follows `--scale` (DNS re-read every 5 s);
#    - static (older nginx, e.g. Debian's 1.22): upstream.static.template with one `server` line
#      per address of `getent ahostsv4 fastapi-app`; a background loop re-resolves every
#      RESOLVE_INTERVAL seconds (default 2) and rewrites the file and reloads nginx
#      (`nginx -s reload`, graceful) when the set of addresses changes: at once for new
#      replicas, after PRUNE_DELAY seconds (default 30) for vanished ones.
#    In both modes the loop also reloads nginx when Flower's address changes (its upstream is
#    resolved once per (re)load).
# See nginx/README.md.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
TEMPLATE_DIR="${TEMPLATE_DIR:-$here}"
CONF_FILE="${CONF_FILE:-/etc/nginx/conf.d/finq.conf}"

: "${LISTEN_PORT:=80}"
: "${UPSTREAM_CONF:=/etc/nginx/finq/upstream.conf}"
: "${FLOWER_UPSTREAM:=flower:5555}"
: "${ACCESS_LOG:=/dev/stdout}"
: "${BODY_LIMIT:=16777216}"
: "${BATCH_BODY_LIMIT:=33554432}"
: "${RATE_PER_IP:=300r/s}"
: "${API_SERVICE:=fastapi-app:8000}"
: "${RESOLVER:=127.0.0.11}"
: "${RESOLVE_INTERVAL:=2}"
: "${PRUNE_DELAY:=30}"
: "${NGINX_UPSTREAM_MODE:=auto}"
: "${LISTEN_CONF:=/etc/nginx/finq/listen.conf}"
: "${REDIRECT_CONF:=/etc/nginx/finq/redirect.conf}"
# HTTPS when both are given (paths inside the container, e.g. Docker secrets under
# /run/secrets): TLS_PORT is where nginx listens for it, TLS_PUBLIC_PORT the port clients use
# (the plain-HTTP redirect points there).
: "${TLS_CERT_FILE:=}"
: "${TLS_KEY_FILE:=}"
: "${TLS_PORT:=443}"
: "${TLS_PUBLIC_PORT:=443}"
export LISTEN_PORT UPSTREAM_CONF FLOWER_UPSTREAM ACCESS_LOG BODY_LIMIT BATCH_BODY_LIMIT RATE_PER_IP API_SERVICE RESOLVER
export LISTEN_CONF REDIRECT_CONF TLS_CERT_FILE TLS_KEY_FILE TLS_PORT

api_host="${API_SERVICE%:*}"
api_port="${API_SERVICE##*:}"
flower_host="${FLOWER_UPSTREAM%:*}"

log() { echo "finq-nginx: $*" >&2; }

healthcheck() {
  url="http://127.0.0.1:${LISTEN_PORT}/nginx-health"
  if command -v curl >/dev/null 2>&1; then
    exec curl -fsS -o /dev/null --max-time 4 "$url"
  elif command -v wget >/dev/null 2>&1; then
    exec wget -q -O /dev/null -T 4 "$url"
  else  # perl-base is essential on Debian-based images
    exec perl -MIO::Socket::INET -e '
      my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]", Timeout => 4) or exit 1;
      print $s "GET /nginx-health HTTP/1.0\r\nHost: localhost\r\n\r\n";
      my $line = <$s>; exit(($line // "") =~ m{^HTTP/\S+ 200 } ? 0 : 1);' "$LISTEN_PORT"
  fi
}

nginx_version() { nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9][0-9.]*\).*|\1|p'; }

version_at_least() {  # version_at_least HAVE WANT
  awk -v a="$1" -v b="$2" 'BEGIN {
    na = split(a, x, "."); nb = split(b, y, ".")
    for (i = 1; i <= 3; i++) { if (x[i] + 0 > y[i] + 0) exit 0; if (x[i] + 0 < y[i] + 0) exit 1 }
    exit 0 }'
}

addresses() {  # sorted IPv4 addresses of a name, space separated ("" when it does not resolve)
  getent ahostsv4 "$1" 2>/dev/null | awk '{ print $1 }' | sort -u | tr '\n' ' ' | sed 's/ $//'
}

render_main() {
  # Exactly the variables listed in the template's header comment.
  vars="$(sed -n '/^[^#]/q; s/^#[[:space:]]*\(\${[A-Za-z_][A-Za-z0-9_]*}\).*/\1/p' \
          "$TEMPLATE_DIR/finq.conf.template" | tr '\n' ' ')"
  for v in $vars; do
    name="$(echo "$v" | tr -d '${}')"
    eval "val=\${$name:-}"
    [ -n "$val" ] || { log "error: $name is empty (needed by finq.conf.template)"; exit 1; }
  done
  mkdir -p "$(dirname "$CONF_FILE")" "$(dirname "$UPSTREAM_CONF")"
  envsubst "$vars" <"$TEMPLATE_DIR/finq.conf.template" >"$CONF_FILE.tmp"
  mv "$CONF_FILE.tmp" "$CONF_FILE"
  # The official image's welcome site would compete for port 80.
  rm -f /etc/nginx/conf.d/default.conf 2>/dev/null || true
}

render_edge() {  # the public listeners: plain HTTP, or HTTPS plus a plain-HTTP redirect
  mkdir -p "$(dirname "$LISTEN_CONF")" "$(dirname "$REDIRECT_CONF")"
  if [ -z "$TLS_CERT_FILE" ] && [ -z "$TLS_KEY_FILE" ]; then
    envsubst '${LISTEN_PORT}' <"$TEMPLATE_DIR/listen.plain.template" >"$LISTEN_CONF"
    echo "# plain HTTP only: no certificate given (TLS_CERT_FILE, TLS_KEY_FILE)" >"$REDIRECT_CONF"
    return
  fi
  for f in "$TLS_CERT_FILE" "$TLS_KEY_FILE"; do
    [ -n "$f" ] && [ -r "$f" ] || { log "error: TLS_CERT_FILE and TLS_KEY_FILE must both name readable files"; exit 1; }
  done
  if [ "$TLS_PUBLIC_PORT" = 443 ]; then TLS_REDIRECT_PORT=""; else TLS_REDIRECT_PORT=":$TLS_PUBLIC_PORT"; fi
  export TLS_REDIRECT_PORT
  envsubst '${TLS_PORT} ${TLS_CERT_FILE} ${TLS_KEY_FILE}' <"$TEMPLATE_DIR/listen.tls.template" >"$LISTEN_CONF"
  envsubst '${LISTEN_PORT} ${ACCESS_LOG} ${TLS_REDIRECT_PORT}' <"$TEMPLATE_DIR/redirect.tls.template" >"$REDIRECT_CONF"
}

render_resolve() {
  envsubst '${RESOLVER} ${API_SERVICE}' <"$TEMPLATE_DIR/upstream.resolve.template" >"$UPSTREAM_CONF.tmp"
  mv "$UPSTREAM_CONF.tmp" "$UPSTREAM_CONF"
}

render_static() {  # render_static "ADDR ADDR ..."
  SERVERS=""
  for a in $1; do
    SERVERS="${SERVERS:+$SERVERS
}  server $a:$api_port max_fails=1 fail_timeout=2s;"
  done
  # No replica resolves (yet): a valid upstream that answers 502 until the loop finds one.
  [ -n "$SERVERS" ] || SERVERS="  server 127.0.0.1:$api_port down;"
  export SERVERS
  envsubst '${SERVERS}' <"$TEMPLATE_DIR/upstream.static.template" >"$UPSTREAM_CONF.tmp"
  mv "$UPSTREAM_CONF.tmp" "$UPSTREAM_CONF"
}

choose_mode() {
  case "$NGINX_UPSTREAM_MODE" in
    resolve|static) echo "$NGINX_UPSTREAM_MODE"; return ;;
    auto) ;;
    *) log "error: NGINX_UPSTREAM_MODE must be auto, resolve or static"; exit 1 ;;
  esac
  v="$(nginx_version)"
  if [ -n "$v" ] && version_at_least "$v" 1.27.3; then echo resolve; else echo static; fi
}

wait_for() {  # wait_for NAME SECONDS: until NAME resolves (or the time is up)
  i=0
  while [ -z "$(addresses "$1")" ] && [ "$i" -lt "$2" ]; do sleep 1; i=$((i + 1)); done
}

render_all() {
  render_edge
  render_main
  mode="$(choose_mode)" || exit 1
  wait_for "$flower_host" 30
  if [ "$mode" = resolve ]; then
    render_resolve
    if ! out="$(nginx -t -q 2>&1)"; then
      case "$out" in
        *resolve*) log "nginx $(nginx_version) rejects 'server ... resolve': using the static upstream"
                   mode=static ;;
        *) echo "$out" >&2; exit 1 ;;
      esac
    fi
  fi
  if [ "$mode" = static ]; then
    wait_for "$api_host" 30
    api_now="$(addresses "$api_host")"
    render_static "$api_now"
  fi
  nginx -t -q
  log "nginx $(nginx_version), upstream mode: $mode${api_now:+ ($api_host: $api_now)}"
}

has_new() {  # has_new "NOW" "BEFORE": NOW holds an address BEFORE lacks
  for a in $1; do
    case " $2 " in *" $a "*) ;; *) return 0 ;; esac
  done
  return 1
}

watch_loop() {  # runs in the background beside nginx
  last_api="${api_now:-}"
  last_flower="$(addresses "$flower_host")"
  gone_since=""
  while sleep "$RESOLVE_INTERVAL"; do
    changed=""
    if [ "$mode" = static ]; then
      api="$(addresses "$api_host")"
      # An empty answer (every replica restarting) keeps the last known set. New replicas are
      # added at once. Vanished ones are dropped only after PRUNE_DELAY seconds: a reload
      # closes idle client keep-alive connections (a request racing that close fails at the
      # client), and meanwhile nginx skips a dead replica by itself (max_fails=1, retry on
      # the next one), so a killed replica costs no reload while clients are busy.
      if [ -n "$api" ] && [ "$api" != "$last_api" ]; then
        now="$(date +%s)"
        if has_new "$api" "$last_api"; then
          changed="$api_host: ${last_api:-none} -> $api"
        elif [ -z "$gone_since" ]; then
          gone_since="$now"
          log "$api_host: ${last_api} -> $api; dropping the vanished in ${PRUNE_DELAY}s"
        elif [ $((now - gone_since)) -ge "$PRUNE_DELAY" ]; then
          changed="$api_host: ${last_api} -> $api"
        fi
        if [ -n "$changed" ]; then
          render_static "$api"
          last_api="$api"
          gone_since=""
        fi
      else
        gone_since=""
      fi
    fi
    flower="$(addresses "$flower_host")"
    if [ -n "$flower" ] && [ "$flower" != "$last_flower" ]; then
      changed="${changed:+$changed; }$flower_host: ${last_flower:-none} -> $flower"
      last_flower="$flower"
    fi
    if [ -n "$changed" ]; then
      if nginx -t -q 2>/dev/null && nginx -s reload 2>/dev/null; then
        log "reloaded ($changed)"
      else
        log "reload failed ($changed); will retry"
        last_api=""; last_flower=""
      fi
    fi
  done
}

case "${1:-}" in
  healthcheck) healthcheck ;;
  render) render_all; exit 0 ;;
  ""|nginx) ;;
  *) exec "$@" ;;
esac

[ $# -gt 0 ] || set -- nginx -g "daemon off;"
api_now=""
render_all
watch_loop &
exec "$@"
