#!/usr/bin/env bash
# `make test-compose`: the whole compose stack, end to end, on this machine.
#
#  1. a Docker engine: the running one, or a dockerd started here (and stopped again at the end,
#     with the iptables FORWARD policy it changed put back);
#  2. images: the official redis/postgres/nginx/python images when present or pullable, else the
#     Debian stand-ins of scripts/build-images.sh (cached: built once); the app images from this
#     tree (tag FINQ_IMAGE_TAG, default compose-test, so a user's :latest is left alone);
#  3. a throwaway env file in a temp dir (random secrets, free loopback ports; the user's .env
#     is never read or written) and a unique project name;
#  4. `build` of every profile's services (high, loadtest, monitoring: the Locust image too),
#     `up`, wait for every container to be healthy (deadline), scale fastapi-app and
#     celery-worker to 5 with `up --scale ... --no-recreate` (no file edited), wait again;
#  5. pytest tests/compose against nginx on 127.0.0.1 (FINQ_COMPOSE_URL and friends; the
#     compose command itself in FINQ_COMPOSE_CMD for `run` tests: Locust, `make user`);
#  6. always (trap): `down -v --remove-orphans`, temp files removed, own dockerd stopped.
#     On failure the stack's logs are kept in .run/compose-test/ first.
#
# env: COMPOSE="docker-compose"  compose command (default: `docker compose` if present, else
#                                 docker-compose)
#      FINQ_TRY_PULL=0            do not try `docker pull` for missing official images
#      FINQ_USE_STANDINS=1        use the stand-ins even when official images are present
#      FINQ_IMAGE_TAG=TAG         tag of the app images built and run (default compose-test)
#      FINQ_COMPOSE_KEEP=1        leave the stack running at the end (debugging; prints how to
#                                 remove it)
#      PYTEST_ARGS="..."          extra pytest arguments
set -Eeuo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

SCALE_TO=5
UP_TIMEOUT="${FINQ_COMPOSE_UP_TIMEOUT:-420}"       # seconds for `up` + healthy, each time
PYTEST_TIMEOUT="${FINQ_COMPOSE_PYTEST_TIMEOUT:-420}"
FINQ_IMAGE_TAG="${FINQ_IMAGE_TAG:-compose-test}"
export FINQ_IMAGE_TAG DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
t0=$(date +%s)

log() { printf '[test-compose %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/finq-compose-test.XXXXXX")"
project="finqtest$$"
stack_up=""
# shellcheck source=scripts/_docker_host.sh
. "$repo/scripts/_docker_host.sh"
status=1

# --- teardown -------------------------------------------------------------------------------
save_logs() {
  local dir="$repo/.run/compose-test"
  mkdir -p "$dir"
  {
    echo "# $project, $(date -u +%FT%TZ)"
    compose ps || true
  } >"$dir/ps.txt" 2>&1
  compose logs --no-color --timestamps >"$dir/logs.txt" 2>&1 || true
  log "stack state and logs saved in ${dir#"$repo"/}/ (ps.txt, logs.txt)"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$stack_up" ]; then
    [ "$status" = 0 ] || save_logs
    if [ "${FINQ_COMPOSE_KEEP:-0}" = 1 ]; then
      log "FINQ_COMPOSE_KEEP=1: stack left running; remove it with:"
      log "  ${compose_cmd[*]} -p $project --env-file $tmp/env -f $repo/docker-compose.yml down -v --remove-orphans"
      started_dockerd=""  # and leave the engine it runs on
    else
      log "tearing down $project"
      compose down -v --remove-orphans --timeout 10 >"$tmp/down.log" 2>&1 ||
        { cat "$tmp/down.log" >&2; log "down failed"; }
    fi
  fi
  stop_own_dockerd
  [ "${FINQ_COMPOSE_KEEP:-0}" = 1 ] || rm -rf "$tmp"
  if [ "$status" = 0 ]; then log "PASSED in $(( $(date +%s) - t0 ))s"; else log "FAILED after $(( $(date +%s) - t0 ))s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 0. packages: what a fresh Debian host lacks (root only; Debian's own packages) -------------
need=()
if ! command -v docker >/dev/null || { ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; }; then
  need+=(docker.io)
fi
if [ -z "${COMPOSE:-}" ] && ! docker compose version >/dev/null 2>&1 \
    && ! command -v docker-compose >/dev/null; then need+=(docker-compose); fi
command -v debootstrap >/dev/null || need+=(debootstrap)
install_packages "${need[@]}"

# --- 1. Docker engine -------------------------------------------------------------------------
start_dockerd

if [ -n "${COMPOSE:-}" ]; then
  read -r -a compose_cmd <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  die "neither 'docker compose' nor docker-compose is installed"
fi
compose_args=(-p "$project" --project-directory "$repo" --env-file "$tmp/env" -f "$repo/docker-compose.yml")
compose() { "${compose_cmd[@]}" "${compose_args[@]}" "$@"; }
log "engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null); compose: ${compose_cmd[*]} ($("${compose_cmd[@]}" version --short 2>/dev/null || echo '?'))"

# --- 2. images --------------------------------------------------------------------------------
registry_ok=1
[ "${FINQ_TRY_PULL:-1}" = 1 ] || registry_ok=0
pick_image() {  # pick_image OFFICIAL STANDIN-TARGET STANDIN-IMAGE -> the image to use
  if [ "${FINQ_USE_STANDINS:-0}" != 1 ]; then
    if docker image inspect "$1" >/dev/null 2>&1; then echo "$1"; return; fi
    if [ "$registry_ok" = 1 ]; then
      if timeout 120 docker pull -q "$1" >/dev/null 2>"$tmp/pull.err"; then echo "$1"; return; fi
      log "cannot pull $1 ($(head -c 160 "$tmp/pull.err")): using stand-ins"
      registry_ok=0
    fi
  fi
  standins+=("$2")
  echo "$3"
}
standins=()
# Not in $(...): pick_image appends to standins and must run in this shell.
pick_image redis:7 redis finq/redis:7-standin >"$tmp/img"; REDIS_IMAGE="$(cat "$tmp/img")"
pick_image postgres:16 postgres finq/postgres:16-standin >"$tmp/img"; POSTGRES_IMAGE="$(cat "$tmp/img")"
pick_image nginx:1.27 nginx finq/nginx:standin >"$tmp/img"; NGINX_IMAGE="$(cat "$tmp/img")"
pick_image python:3.11-slim python finq/python:3.11-standin >"$tmp/img"; PYTHON_IMAGE="$(cat "$tmp/img")"
log "images: $REDIS_IMAGE, $POSTGRES_IMAGE, $NGINX_IMAGE, app FROM $PYTHON_IMAGE"
export BUILD_LOG_DIR="$tmp"
if [ "${#standins[@]}" -gt 0 ]; then
  log "stand-ins (built only when missing): ${standins[*]}"
  timeout 1200 bash "$repo/scripts/build-images.sh" "${standins[@]}" || die "building the stand-in images"
fi
log "building the app images (finq/fastapi-app:$FINQ_IMAGE_TAG, finq/celery-worker:$FINQ_IMAGE_TAG)"
PYTHON_IMAGE="$PYTHON_IMAGE" timeout 1200 bash "$repo/scripts/build-images.sh" app || die "building the app images"

# --- 3. throwaway configuration -------------------------------------------------------------
rand() { head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c "1-$1"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
HTTP_PORT="$(free_port)"
FLOWER_PORT="$(free_port)"
flower_auth="flower:$(rand 24)"
admin_password="$(rand 24)"
cat >"$tmp/env" <<EOF
# written by scripts/test-compose.sh for project $project; removed at the end
APP_ENV=production
APP_SECRET_KEY=$(rand 64)
ADMIN_USERNAME=admin
ADMIN_PASSWORD=$admin_password
LOG_LEVEL=INFO
POSTGRES_USER=finq
POSTGRES_PASSWORD=$(rand 32)
POSTGRES_DB=finq
REDIS_PASSWORD=$(rand 32)
FLOWER_BASIC_AUTH=$flower_auth
WORKER_CONCURRENCY=4
GUNICORN_WORKERS=2
# One client address sends all the smoke test's requests: lift the per-address limits.
RATE_LIMIT_GLOBAL=100000/minute
RATE_LIMIT_SUBMIT=10000/minute
RATE_LIMIT_LOGIN=1000/minute
NGINX_RATE_PER_IP=2000r/s
# No HTTP_BIND: the default (127.0.0.1) is what tests/compose checks.
HTTP_PORT=$HTTP_PORT
FLOWER_PORT=$FLOWER_PORT
REDIS_IMAGE=$REDIS_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
NGINX_IMAGE=$NGINX_IMAGE
PYTHON_IMAGE=$PYTHON_IMAGE
FINQ_IMAGE_TAG=$FINQ_IMAGE_TAG
EOF
# Variables of this shell would override the file in compose's interpolation: make them agree.
set -a
# shellcheck disable=SC1091
. "$tmp/env"
set +a

# --- 4. up, healthy, scale ------------------------------------------------------------------
# wait_healthy API WORKERS: every container of the project healthy (migrate: exited 0), with
# the given replica counts, before the deadline.
wait_healthy() {
  local want_api="$1" want_worker="$2" deadline=$(( $(date +%s) + UP_TIMEOUT )) report bad
  while :; do
    report="$(docker ps -aq --filter "label=com.docker.compose.project=$project" |
      xargs -r docker inspect --format \
        '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}} {{.Name}}')"
    bad="$(awk -v api="$want_api" -v wrk="$want_worker" '
      { n[$1]++ }
      $1 == "migrate" { if (!($2 == "exited" && $4 == 0)) print "migrate: " $2 " exit " $4; next }
      !($2 == "running" && $3 == "healthy") { print $5 ": " $2 " " $3 }
      END {
        split("postgres redis migrate fastapi-app celery-worker celery-beat flower nginx", s, " ")
        for (i in s) { want = s[i] == "fastapi-app" ? api : s[i] == "celery-worker" ? wrk : 1
                       if (n[s[i]] != want) print s[i] ": " n[s[i]] + 0 " of " want " containers" }
      }' <<<"$report")"
    [ -z "$bad" ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "not healthy within ${UP_TIMEOUT}s:"; printf '  %s\n' "$bad" >&2
      return 1
    fi
    sleep 2
  done
}

http_ok() {  # http_ok URL SECONDS: answers 200 before the deadline
  local deadline=$(( $(date +%s) + $2 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true)" = 200 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# Every profile's own images, through compose's build sections (what an operator's
# `docker compose --profile loadtest up` builds): the app images again (all cache) and Locust's.
profiles=(--profile high --profile loadtest --profile monitoring)
log "building every profile's images with compose (${profiles[*]})"
timeout 1200 "${compose_cmd[@]}" "${compose_args[@]}" "${profiles[@]}" build >"$tmp/build.log" 2>&1 ||
  { tail -n 40 "$tmp/build.log" >&2; die "compose build"; }

log "starting project $project (nginx on 127.0.0.1:$HTTP_PORT, flower on 127.0.0.1:$FLOWER_PORT)"
stack_up=1
timeout "$UP_TIMEOUT" "${compose_cmd[@]}" "${compose_args[@]}" up -d --no-build >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; die "compose up"; }
wait_healthy 3 3 || die "the stack did not become healthy"
http_ok "http://127.0.0.1:$HTTP_PORT/health/ready" 60 || die "/health/ready through nginx"
log "stack healthy (3 API replicas, 3 workers)"

log "scaling fastapi-app and celery-worker to $SCALE_TO (no file edited)"
timeout "$UP_TIMEOUT" "${compose_cmd[@]}" "${compose_args[@]}" up -d --no-build --no-recreate \
  --scale fastapi-app="$SCALE_TO" --scale celery-worker="$SCALE_TO" >"$tmp/scale.log" 2>&1 || { cat "$tmp/scale.log" >&2; die "compose up --scale"; }
wait_healthy "$SCALE_TO" "$SCALE_TO" || die "the scaled stack did not become healthy"
log "scaled stack healthy"

# --- 5. the smoke suite -----------------------------------------------------------------------
py="$repo/.venv/bin/python"
[ -x "$py" ] && "$py" -c 'import httpx, pytest' 2>/dev/null || py=python3
"$py" -c 'import httpx, pytest' 2>/dev/null || die "pytest and httpx are needed (pip install -e '.[dev]')"
log "running tests/compose"
export FINQ_COMPOSE_URL="http://127.0.0.1:$HTTP_PORT" \
  FINQ_COMPOSE_CMD="${compose_cmd[*]} ${compose_args[*]}" \
  FINQ_COMPOSE_FLOWER_URL="http://127.0.0.1:$FLOWER_PORT/flower" \
  FINQ_COMPOSE_PROJECT="$project" \
  FINQ_COMPOSE_FLOWER_AUTH="$flower_auth" \
  FINQ_COMPOSE_ADMIN_USERNAME=admin \
  FINQ_COMPOSE_ADMIN_PASSWORD="$admin_password" \
  FINQ_COMPOSE_API_REPLICAS="$SCALE_TO" \
  FINQ_COMPOSE_WORKER_REPLICAS="$SCALE_TO"
read -r -a pytest_extra <<<"${PYTEST_ARGS:-}"
timeout "$PYTEST_TIMEOUT" "$py" -m pytest "$repo/tests/compose" --confcutdir="$repo/tests/compose" \
  -p no:cacheprovider -v "${pytest_extra[@]}" || die "tests/compose"
status=0
