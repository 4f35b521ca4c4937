#!/usr/bin/env bash
# `make test-swarm`: a real three-node Docker Swarm on this machine, the stack of
# deploy/swarm/stack.yml on it, the scenarios of tests/swarm, then nothing left behind.
#
#  1. a Docker engine: the running one, or a dockerd started here (stopped again at the end);
#     the iptables FORWARD policy is saved first and put back (at once, and at the end);
#     finq-swarm-* containers already there are refused on a running engine (another run's?)
#     and torn down on one started here (a killed run's);
#  2. images: the Debian stand-ins and the app images (scripts/build-images.sh, tag
#     FINQ_IMAGE_TAG, default swarm-test) and finq/swarm-node (deploy/swarm/node): nothing pulled;
#  3. a bridge network finq-swarm-net; on it a registry (Debian's docker-registry, in the node
#     image) and three nodes (finq-swarm-manager, -worker1, -worker2), each a container running
#     its own dockerd (no --privileged: the capabilities and options below); the project's
#     images pushed to the registry (through 127.0.0.1), the nodes pull them from it;
#  4. swarm init/join, node labels (the manager holds the data and the edge), Docker secrets,
#     `docker stack deploy` (DEFAULT_TASK_TIMEOUT shortened to 15 s: redelivery after 40 s; one
#     account fills every worker: QUOTA_RUNNING_TASKS lifted);
#  5. pytest tests/swarm: convergence, scaling, a node killed, a rolling update, the node back;
#  6. always (trap): node containers, their volumes, the registry, the network, the pushed
#     tags removed; the engine stopped if started here; FORWARD policy as found.
#     On failure the services' state and logs are kept in .run/swarm-test/ first.
#
# env: FINQ_IMAGE_TAG=TAG        tag of the app images built and deployed (default swarm-test)
#      FINQ_SWARM_KEEP=1         leave everything running at the end (debugging)
#      FINQ_SWARM_TIMEOUT=S      the whole run's deadline, seconds (default 1200)
#      PYTEST_ARGS="..."         extra pytest arguments
set -Eeuo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

PREFIX=finq-swarm
NET="$PREFIX-net"
NODES=("$PREFIX-manager" "$PREFIX-worker1" "$PREFIX-worker2")
REGISTRY_CT="$PREFIX-registry"
NODE_IMAGE=finq/swarm-node:bookworm
STACK=finq
FINQ_IMAGE_TAG="${FINQ_IMAGE_TAG:-swarm-test}"
DEADLINE_S="${FINQ_SWARM_TIMEOUT:-1200}"
export FINQ_IMAGE_TAG DOCKER_BUILDKIT=0
t0=$(date +%s)
phase_t=$t0
timings=()

log() { printf '[test-swarm %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
phase() {  # phase NAME: closes the previous phase's timing
  local now; now=$(date +%s)
  timings+=("$1 $(( now - phase_t ))s"); phase_t=$now
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/finq-swarm-test.XXXXXX")"
status=1
pushed=()

# shellcheck source=scripts/_docker_host.sh
. "$repo/scripts/_docker_host.sh"

manager() { docker -H "tcp://$manager_ip:2375" "$@"; }

save_logs() {
  local dir="$repo/.run/swarm-test"
  mkdir -p "$dir"
  [ -n "${manager_ip:-}" ] || return 0
  {
    manager node ls
    manager service ls
    manager service ps --no-trunc "$(manager service ls -q --filter "label=com.docker.stack.namespace=$STACK")"
  } >"$dir/state.txt" 2>&1 || true
  local s
  for s in $(manager service ls --format '{{.Name}}' 2>/dev/null); do
    timeout 20 docker -H "tcp://$manager_ip:2375" service logs --timestamps --tail 300 "$s" >"$dir/$s.log" 2>&1 || true
  done
  log "swarm state and service logs saved in ${dir#"$repo"/}/"
}

teardown() {
  local n
  # -v: the anonymous volume of the image's VOLUME /var/lib/docker (the registry's) goes too.
  docker rm -f -v "${NODES[@]}" "$REGISTRY_CT" >/dev/null 2>&1 || true
  local pids=()
  for n in "${NODES[@]}" "$REGISTRY_CT"; do docker volume rm "$n" >/dev/null 2>&1 & pids+=($!); done
  wait "${pids[@]}" || true  # most of them may not exist
  docker network rm "$NET" >/dev/null 2>&1 || true
  # Every tag pushed through 127.0.0.1 (tests/swarm pushes one more for the rolling update).
  if [ -n "${reg_port:-}" ]; then
    docker images --format '{{.Repository}}:{{.Tag}}' | grep "^127.0.0.1:$reg_port/" |
      xargs -r docker image rm >/dev/null 2>&1 || true
  fi
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ -n "${watchdog:-}" ] && kill "$watchdog" 2>/dev/null
  [ -z "${scenarios_started:-}" ] || phase scenarios
  if [ -s "$tmp/timings" ]; then
    while read -r line; do timings+=("  $line"); done <"$tmp/timings"
  fi
  [ "$status" = 0 ] || save_logs
  phase_t=$(date +%s)
  if [ -z "${claimed:-}" ]; then
    :  # the names may belong to another run: nothing of this run's to tear down
  elif [ "${FINQ_SWARM_KEEP:-0}" = 1 ]; then
    log "FINQ_SWARM_KEEP=1: left running; manager: DOCKER_HOST=tcp://${manager_ip:-?}:2375"
    started_dockerd=""
  else
    log "tearing down: nodes, registry, network, volumes"
    teardown
    local left
    left="$(docker ps -aq --filter "name=^$PREFIX-"; docker volume ls -q --filter "name=^$PREFIX-"; docker network ls -q --filter "name=^$NET\$")"
    [ -z "$left" ] || { log "left behind: $left"; rc=1; status=1; }
  fi
  stop_own_dockerd
  [ "${FINQ_SWARM_KEEP:-0}" = 1 ] || rm -rf "$tmp"
  phase teardown
  log "phases: ${timings[*]}"
  if [ "$status" = 0 ]; then log "PASSED in $(( $(date +%s) - t0 ))s"; else log "FAILED after $(( $(date +%s) - t0 ))s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Bounded: the whole run stops by itself (the trap still tears down).
(
  sleep "$DEADLINE_S" & sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper" || exit 0
  log "deadline of ${DEADLINE_S}s reached: stopping"; kill -TERM $$
) &
watchdog=$!

# --- 0. packages ------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || docker info >/dev/null 2>&1 || need+=(docker.io)
command -v iptables >/dev/null || need+=(iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
install_packages "${need[@]}"

# --- 1. engine --------------------------------------------------------------------------------
start_dockerd
log "engine $(docker version --format '{{.Server.Version}}'); FORWARD policy ${forward_before:-unknown}"
if [ -n "$(docker ps -aq --filter "name=^$PREFIX-")" ]; then
  # An engine started here serves no other run: these are a killed run's, never torn down.
  [ -n "$started_dockerd" ] || die "containers named $PREFIX-* exist already (another run?)"
  log "removing a killed run's leftovers: $(docker ps -a --format '{{.Names}}' --filter "name=^$PREFIX-" | tr '\n' ' ')"
  teardown
fi
claimed=1  # from here on, the cleanup tears down everything named $PREFIX-*
phase engine

# --- 2. images --------------------------------------------------------------------------------
export BUILD_LOG_DIR="$tmp"
log "images: stand-ins (built when missing) and the app images finq/*:$FINQ_IMAGE_TAG"
timeout 1200 bash "$repo/scripts/build-images.sh" standins app || die "building the images"
log "node image $NODE_IMAGE (deploy/swarm/node)"
docker build -q --build-arg BASE_IMAGE=finq/debian-base:bookworm -t "$NODE_IMAGE" \
  "$repo/deploy/swarm/node" >"$tmp/node-build.log" 2>&1 || { tail -n 30 "$tmp/node-build.log" >&2; die "building $NODE_IMAGE"; }
phase images

# --- 3. network, registry, nodes --------------------------------------------------------------
docker network create "$NET" >/dev/null
reg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
docker run -d --name "$REGISTRY_CT" --network "$NET" -p "127.0.0.1:$reg_port:5000" \
  -v "$REGISTRY_CT:/var/lib/registry" "$NODE_IMAGE" registry >/dev/null
REGISTRY="$REGISTRY_CT:5000"  # the name the nodes pull by, on $NET

node_opts=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
  --security-opt apparmor=unconfined --security-opt systempaths=unconfined
  --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --network "$NET"
  -e "REGISTRY=$REGISTRY")
start_node() {  # start_node NAME
  docker run -d --name "$1" --hostname "${1#"$PREFIX"-}" "${node_opts[@]}" -e "NODE_NAME=$1" \
    -v "$1:/var/lib/docker" "$NODE_IMAGE" dockerd >/dev/null
}
for n in "${NODES[@]}"; do start_node "$n"; done
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }
manager_ip="$(node_ip "${NODES[0]}")"

log "pushing the images to the registry (127.0.0.1:$reg_port)"
for _ in $(seq 1 40); do curl -fs "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.25; done
images=(finq/fastapi-app:"$FINQ_IMAGE_TAG" finq/celery-worker:"$FINQ_IMAGE_TAG"
  finq/redis:7-standin finq/postgres:16-standin finq/nginx:standin)
for image in "${images[@]}"; do
  docker tag "$image" "127.0.0.1:$reg_port/$image"
  pushed+=("127.0.0.1:$reg_port/$image")
done
printf '%s\n' "${pushed[@]}" | xargs -P 5 -I{} sh -c 'docker push -q {} >/dev/null' || die "docker push"
phase registry

for n in "${NODES[@]}"; do
  for _ in $(seq 1 120); do docker exec "$n" docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker exec "$n" docker info >/dev/null 2>&1 || { docker logs "$n" 2>&1 | tail -n 20 >&2; die "$n: dockerd did not start"; }
done
manager swarm init --advertise-addr "$manager_ip" >/dev/null
token="$(manager swarm join-token -q worker)"
for n in "${NODES[@]:1}"; do
  docker exec "$n" docker swarm join --token "$token" "$manager_ip:2377" >/dev/null
done
manager node update --label-add finq.data=true --label-add finq.edge=true "${NODES[0]#"$PREFIX"-}" >/dev/null
log "swarm: $(manager node ls --format '{{.Hostname}}:{{.Status}}' | tr '\n' ' ')"
phase swarm

# --- 4. secrets and the stack -----------------------------------------------------------------
rand() { head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c "1-$1"; }
pg_password="$(rand 32)"; redis_password="$(rand 32)"; admin_password="$(rand 24)"
flower_auth="flower:$(rand 24)"
secret() { printf '%s' "$2" | manager secret create "finq_$1" - >/dev/null; }
secret app_secret_key "$(rand 64)"
secret postgres_password "$pg_password"
secret redis_password "$redis_password"
secret database_url "postgresql+psycopg://finq:$pg_password@postgres:5432/finq"
secret redis_url "redis://:$redis_password@redis:6379/0"
secret admin_password "$admin_password"
secret flower_basic_auth "$flower_auth"

HTTP_PORT=8080
log "docker stack deploy -c deploy/swarm/stack.yml $STACK"
env FINQ_REGISTRY="$REGISTRY" FINQ_IMAGE_TAG="$FINQ_IMAGE_TAG" \
  REDIS_IMAGE="$REGISTRY/finq/redis:7-standin" POSTGRES_IMAGE="$REGISTRY/finq/postgres:16-standin" \
  NGINX_IMAGE="$REGISTRY/finq/nginx:standin" HTTP_PORT="$HTTP_PORT" \
  DEFAULT_TASK_TIMEOUT=15 WORKER_CONCURRENCY=2 GUNICORN_WORKERS=1 WORKER_MAX_PER_NODE=2 \
  RATE_LIMIT_GLOBAL=100000/minute RATE_LIMIT_SUBMIT=10000/minute RATE_LIMIT_LOGIN=1000/minute \
  NGINX_RATE_PER_IP=2000r/s QUOTA_QUEUED_TASKS=100000 QUOTA_RUNNING_TASKS=1000 \
  docker -H "tcp://$manager_ip:2375" stack deploy -c "$repo/deploy/swarm/stack.yml" "$STACK" \
  >"$tmp/deploy.log" 2>&1 || { cat "$tmp/deploy.log" >&2; die "docker stack deploy"; }
phase deploy

# --- 5. the scenarios -------------------------------------------------------------------------
py="$repo/.venv/bin/python"
[ -x "$py" ] || die "run make install first (.venv)"
export FINQ_SWARM_URL="http://$manager_ip:$HTTP_PORT" \
  FINQ_SWARM_DOCKER_HOST="tcp://$manager_ip:2375" \
  FINQ_SWARM_STACK="$STACK" \
  FINQ_SWARM_NODES="${NODES[*]}" \
  FINQ_SWARM_PREFIX="$PREFIX" \
  FINQ_SWARM_REGISTRY="$REGISTRY" \
  FINQ_SWARM_PUSH_REGISTRY="127.0.0.1:$reg_port" \
  FINQ_SWARM_IMAGE_TAG="$FINQ_IMAGE_TAG" \
  FINQ_SWARM_ADMIN_PASSWORD="$admin_password" \
  FINQ_SWARM_FLOWER_AUTH="$flower_auth" \
  FINQ_SWARM_TIMINGS="$tmp/timings"
# To run the scenarios again on a kept swarm (FINQ_SWARM_KEEP=1): . $tmp/swarm.env
for v in "${!FINQ_SWARM_@}"; do printf 'export %s=%q\n' "$v" "${!v}"; done >"$tmp/swarm.env"
read -r -a pytest_extra <<<"${PYTEST_ARGS:-}"
scenarios_started=1
left=$(( DEADLINE_S - ($(date +%s) - t0) - 60 ))
[ "$left" -gt 60 ] || die "no time left for the scenarios"
timeout "$left" "$py" -m pytest "$repo/tests/swarm" --confcutdir="$repo/tests/swarm" -p no:cacheprovider -v \
  "${pytest_extra[@]}" || die "tests/swarm"
status=0
