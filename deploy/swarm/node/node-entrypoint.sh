#!/bin/sh
# Entrypoint of finq/swarm-node:
#   node-entrypoint.sh dockerd      a Docker engine on the node's own address, port 2375 (plain
#                                   TCP: reachable only on the test's bridge network), trusting
#                                   the test registry REGISTRY (host:port) without TLS
#   node-entrypoint.sh registry     Debian's docker-registry on :5000, storage in /var/lib/registry
set -eu
case "${1:-dockerd}" in
  dockerd)
    # cgroup v1 with the host's cgroup namespace: each node's containers in a group of its own.
    exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 \
      ${REGISTRY:+--insecure-registry "$REGISTRY"} \
      --cgroup-parent "/${NODE_NAME:-finq-swarm-node}" \
      --log-driver json-file --log-opt max-size=5m --log-opt max-file=2
    ;;
  registry)
    mkdir -p /var/lib/registry
    cat >/etc/finq-registry.yml <<'YML'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:5000
YML
    exec docker-registry serve /etc/finq-registry.yml
    ;;
  *) exec "$@" ;;
esac
