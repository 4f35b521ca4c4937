# Sourced by scripts/test-compose.sh and scripts/test-swarm.sh: the Debian packages a fresh
# host lacks, a dockerd started here when no engine answers (and stopped again, with the
# iptables rules and the docker0 bridge it leaves behind), and the iptables FORWARD policy as
# it was found. The caller defines `log`, `die` and `$tmp`.

started_dockerd=""
forward_before=""
bridge_before=""

forward_policy() { iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3; exit }'; }

restore_forward() {
  local now
  now="$(forward_policy)"
  if [ -n "$forward_before" ] && [ -n "$now" ] && [ "$now" != "$forward_before" ]; then
    iptables -P FORWARD "$forward_before" && log "iptables FORWARD policy restored to $forward_before"
  fi
}

install_packages() {  # install_packages PKG...: Debian's own, their services left stopped
  [ $# -gt 0 ] || return 0
  [ "$(id -u)" = 0 ] || die "missing: $* (install them, or run as root to have them installed)"
  log "installing Debian packages: $*"
  apt-get update -q >"$tmp/apt.log" 2>&1 || { tail -n 20 "$tmp/apt.log" >&2; die "apt-get update failed"; }
  # Install without starting the distribution's services: dockerd is started by start_dockerd.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    >>"$tmp/apt.log" 2>&1 || { rm -f /usr/sbin/policy-rc.d; tail -n 20 "$tmp/apt.log" >&2; die "apt-get install failed"; }
  rm -f /usr/sbin/policy-rc.d
}

start_dockerd() {  # the running engine, or a dockerd of our own (root only)
  forward_before="$(forward_policy)"
  command -v docker >/dev/null || die "docker CLI not found"
  docker info >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "no Docker engine answers, and only root can start one here"
  command -v dockerd >/dev/null || die "no Docker engine answers and dockerd is not installed"
  log "no Docker engine answers: starting dockerd (log: $tmp/dockerd.log)"
  # dockerd adds its chains and rules on start and leaves them on stop: keep the tables it
  # writes, to put them back as they were once it is gone.
  { iptables-save -t filter && iptables-save -t nat; } >"$tmp/iptables.before" 2>/dev/null ||
    rm -f "$tmp/iptables.before"
  ip link show docker0 >/dev/null 2>&1 && bridge_before=1
  dockerd >"$tmp/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || { tail -n 20 "$tmp/dockerd.log" >&2; die "dockerd exited"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { tail -n 20 "$tmp/dockerd.log" >&2; die "dockerd did not come up within 60 s"; }
  restore_forward  # dockerd sets DROP; the host's own policy stays as it was
}

stop_own_dockerd() {  # only the one start_dockerd started; then FORWARD as found
  if [ -n "$started_dockerd" ]; then
    log "stopping the dockerd started here (pid $started_dockerd)"
    kill -TERM "$started_dockerd" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$started_dockerd" 2>/dev/null; then kill -KILL "$started_dockerd" 2>/dev/null || true; fi
    wait "$started_dockerd" 2>/dev/null || true
    if [ -s "$tmp/iptables.before" ] && iptables-restore <"$tmp/iptables.before"; then
      log "iptables filter and nat tables restored as found (dockerd leaves its chains behind)"
    fi
    if [ -z "$bridge_before" ] && ip link show docker0 >/dev/null 2>&1; then
      ip link delete docker0 && log "removed the docker0 bridge dockerd left behind"
    fi
  fi
  restore_forward
}
