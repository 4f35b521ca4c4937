#!/usr/bin/env bash
# Builds finq's container images from Debian packages alone, for hosts that reach a Debian
# mirror (and a PyPI index for the app images) but no container registry:
#
#   base      finq/debian-base:bookworm    minimal bookworm from debootstrap, `docker import`ed;
#                                          trusts this host's CA certificates and carries this
#                                          host's apt sources and apt configuration
#   python    finq/python:3.11-standin     python3 (Debian's 3.11) + python3-venv
#   redis     finq/redis:7-standin         Debian's redis-server 7.0
#   postgres  finq/postgres:16-standin     PostgreSQL 15 (bookworm has no 16; see docs/deployment.md)
#   nginx     finq/nginx:standin           Debian's nginx 1.22 + gettext-base (envsubst)
#   app       finq/fastapi-app:TAG, finq/celery-worker:TAG from this tree, FROM $PYTHON_IMAGE
#             (default: the python stand-in); always rebuilt, Docker's layer cache keeps it quick
#
# usage: scripts/build-images.sh [base|python|redis|postgres|nginx|standins|app|all]...
#        (no argument: base and the four stand-ins)
# env:   FORCE=1         rebuild images that already exist (otherwise they are kept)
#        MIRROR=URL      Debian mirror for debootstrap (default: the first bookworm entry of
#                        this host's apt sources)
#        FINQ_IMAGE_TAG  tag of the app images (default: latest)
#        PYTHON_IMAGE    base of the app images (default: finq/python:3.11-standin)
#        HTTP(S)_PROXY, NO_PROXY  passed on to the builds when set
# Needs root (debootstrap, chroot) and a running Docker engine; uses the classic builder.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
suite=bookworm
FORCE="${FORCE:-0}"
BASE_IMAGE="${BASE_IMAGE:-finq/debian-base:bookworm}"
STANDIN_PYTHON="finq/python:3.11-standin"
STANDIN_REDIS="finq/redis:7-standin"
STANDIN_POSTGRES="finq/postgres:16-standin"
STANDIN_NGINX="finq/nginx:standin"
FINQ_IMAGE_TAG="${FINQ_IMAGE_TAG:-latest}"
export DOCKER_BUILDKIT=0

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
wanted() {  # wanted IMAGE: build it? (missing, or FORCE=1)
  if [ "$FORCE" = 1 ] || ! image_exists "$1"; then return 0; fi
  log "$1 exists (FORCE=1 rebuilds it)"
  return 1
}

# Proxy settings of this shell go to the builds (the predefined build args of Docker).
proxy_args=()
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [ -n "${!var:-}" ]; then proxy_args+=(--build-arg "$var=${!var}"); fi
done

# The first bookworm mirror in this host's apt sources (deb822 .sources, then one-line .list).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      function flush() { if (uris != "" && index(" " suites " ", " " suite " ") && types ~ /(^| )deb( |$)/) { print uris; found = 1; exit } uris = suites = types = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^[Uu][Rr][Ii][Ss]:/    { sub(/^[^:]*:[[:space:]]*/, ""); split($0, u, /[[:space:]]+/); uris = u[1] }
      /^[Ss]uites:/           { sub(/^[^:]*:[[:space:]]*/, ""); suites = $0 }
      /^[Tt]ypes:/            { sub(/^[^:]*:[[:space:]]*/, ""); types = $0 }
      END { if (!found) flush() }' "$f"
  done | head -n1 | grep . && return 0
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($i ~ /^\[/ || $i ~ /\]$/) i++; if ($(i+1) == suite) { print $i; exit } }' |
    grep .
}

build_base() {
  wanted "$BASE_IMAGE" || return 0
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  local mirror="${MIRROR:-}"
  [ -n "$mirror" ] || mirror="$(host_mirror)" || die "no $suite entry in this host's apt sources; set MIRROR"
  local work root
  work="$(mktemp -d "${TMPDIR:-/var/tmp}/finq-debootstrap.XXXXXX")"
  root="$work/rootfs"
  # shellcheck disable=SC2064
  trap "cleanup_rootfs '$work'" EXIT
  log "debootstrap $suite (minbase) from the host's mirror into $root"
  local keyring=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  debootstrap --variant=minbase --components=main --include=ca-certificates "${keyring[@]}" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

  log "configuring the rootfs: host apt sources/config, host CA certificates, container tweaks"
  # apt: the host's sources, configuration, pinning and public keys (never its auth.conf.d).
  rm -f "$root/etc/apt/sources.list"
  mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/preferences.d" \
           "$root/etc/apt/trusted.gpg.d" "$root/etc/apt/keyrings"
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    if [ "$f" = /etc/apt/sources.list ]; then cp "$f" "$root/etc/apt/sources.list"; else cp "$f" "$root/etc/apt/sources.list.d/"; fi
  done
  for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/* /etc/apt/preferences /etc/apt/preferences.d/* \
           /etc/apt/trusted.gpg.d/* /etc/apt/keyrings/*; do
    [ -f "$f" ] || continue
    cp "$f" "$root${f%/*}/"
  done
  # Proxy of this shell for apt in the image, when there is one (apt.conf.d files that set
  # Acquire::*::Proxy were copied above already).
  if [ -n "${HTTP_PROXY:-${http_proxy:-}}${HTTPS_PROXY:-${https_proxy:-}}" ]; then
    {
      [ -n "${HTTP_PROXY:-${http_proxy:-}}" ] && echo "Acquire::http::Proxy \"${HTTP_PROXY:-${http_proxy:-}}\";"
      [ -n "${HTTPS_PROXY:-${https_proxy:-}}" ] && echo "Acquire::https::Proxy \"${HTTPS_PROXY:-${https_proxy:-}}\";"
    } >"$root/etc/apt/apt.conf.d/80finq-proxy"
  fi
  # Small images: no recommends, no docs/man pages/locales from later installs.
  cat >"$root/etc/apt/apt.conf.d/90finq-container" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/90finq-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
DPKG
  # Services must not start inside `docker build` (no init there).
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # Trust this host's CA certificates (local ones added to the Debian bundle; the host's bundle
  # as it is when the update does not run).
  mkdir -p "$root/usr/local/share/ca-certificates"
  for f in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$f" ] && cp "$f" "$root/usr/local/share/ca-certificates/"
  done
  if ! chroot "$root" update-ca-certificates >/dev/null 2>&1; then
    log "update-ca-certificates failed in the rootfs: copying the host's bundle"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  # Clean: package caches and lists, logs; Docker provides hostname/hosts/resolv.conf.
  chroot "$root" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
         "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/root/.bash_history
  : >"$root/etc/resolv.conf"; : >"$root/etc/hostname"
  umount_below "$root"

  log "importing $BASE_IMAGE"
  tar --numeric-owner --xattrs -C "$root" -c . |
    docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'ENV LANG=C.UTF-8' \
      -c 'CMD ["/bin/bash"]' \
      -m "debootstrap --variant=minbase $suite, finq scripts/build-images.sh" \
      - "$BASE_IMAGE" >/dev/null
  cleanup_rootfs "$work"
  trap - EXIT
  log "built $BASE_IMAGE"
}

umount_below() {  # unmount whatever debootstrap may have left mounted under $1
  local m
  for m in $(awk -v r="$1" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

cleanup_rootfs() {
  [ -d "$1" ] || return 0
  umount_below "$1"
  rm -rf --one-file-system "$1"
}

build_standin() {  # build_standin IMAGE DIR
  local image="$1" dir="$2"
  wanted "$image" || return 0
  image_exists "$BASE_IMAGE" || build_base
  log "building $image from deploy/docker/$dir"
  docker build --pull=false --build-arg "BASE_IMAGE=$BASE_IMAGE" "${proxy_args[@]}" \
    -t "$image" "$repo/deploy/docker/$dir" >"${BUILD_LOG_DIR:-/tmp}/finq-build-$dir.log" 2>&1 ||
    { tail -n 40 "${BUILD_LOG_DIR:-/tmp}/finq-build-$dir.log" >&2; die "building $image failed (log above)"; }
  log "built $image"
}

build_app() {
  local python_image="${PYTHON_IMAGE:-$STANDIN_PYTHON}"
  if [ "$python_image" = "$STANDIN_PYTHON" ]; then build_standin "$STANDIN_PYTHON" python; fi
  local name
  for name in fastapi-app celery-worker; do
    log "building finq/$name:$FINQ_IMAGE_TAG FROM $python_image"
    docker build --build-arg "PYTHON_IMAGE=$python_image" "${proxy_args[@]}" \
      -f "$repo/$name/Dockerfile" -t "finq/$name:$FINQ_IMAGE_TAG" "$repo" \
      >"${BUILD_LOG_DIR:-/tmp}/finq-build-$name.log" 2>&1 ||
      { tail -n 40 "${BUILD_LOG_DIR:-/tmp}/finq-build-$name.log" >&2; die "building finq/$name failed (log above)"; }
  done
  log "built finq/fastapi-app:$FINQ_IMAGE_TAG and finq/celery-worker:$FINQ_IMAGE_TAG"
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd first)"

[ $# -gt 0 ] || set -- base standins
for target in "$@"; do
  case "$target" in
    base)     build_base ;;
    python)   build_standin "$STANDIN_PYTHON" python ;;
    redis)    build_standin "$STANDIN_REDIS" redis ;;
    postgres) build_standin "$STANDIN_POSTGRES" postgres ;;
    nginx)    build_standin "$STANDIN_NGINX" nginx ;;
    standins) build_standin "$STANDIN_PYTHON" python; build_standin "$STANDIN_REDIS" redis
              build_standin "$STANDIN_POSTGRES" postgres; build_standin "$STANDIN_NGINX" nginx ;;
    app)      build_app ;;
    all)      build_base; build_standin "$STANDIN_PYTHON" python; build_standin "$STANDIN_REDIS" redis
              build_standin "$STANDIN_POSTGRES" postgres; build_standin "$STANDIN_NGINX" nginx
              build_app ;;
    *) die "unknown target '$target' (base|python|redis|postgres|nginx|standins|app|all)" ;;
  esac
done
