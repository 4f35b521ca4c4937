#!/usr/bin/env bash
# Installs what the local stack and the tests need, once: Debian packages (redis-server, nginx,
# python3-venv, npm; PostgreSQL, promtool and Chromium for the tests) when missing, the web
# page's linter in node_modules and the pinned .venv. Safe to run again: npm and Python
# packages are reinstalled only when their manifest or lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v envsubst >/dev/null 2>&1 || need+=(gettext-base)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# For the tests: PostgreSQL binaries (a throwaway cluster) and promtool (monitoring config).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# For the browser tests: Debian's headless Chromium and its WebDriver (never a downloaded build).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# For `make lint-js`: npm installs Biome from package-lock.json.
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q
  # Install without starting the distribution's own services: the stack runs its own.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

# The web page's linter: `npm ci` when node_modules is missing or older than the lock.
npm_stamp=node_modules/.finq-installed
npm_want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$npm_want" ]; then
  echo "bootstrap: installing the web page's linter in node_modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$npm_want" > "$npm_stamp"
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: Python 3.11 or newer is needed (found $("$PY" --version))" >&2; exit 1; }

stamp=.venv/.finq-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "bootstrap: creating the virtualenv in .venv (pinned by requirements.lock)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip's own chatter (and setuptools' editable-build notices) goes to a log, shown on failure.
log=.venv/install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip \
       && .venv/bin/python -m pip install -q -c requirements.lock -e '.[api,worker,dev]'; } \
     > "$log" 2>&1; then
  cat "$log" >&2
  echo "bootstrap: pip install failed (log above, also in $log)" >&2
  exit 1
fi
.venv/bin/python -c 'import finq_api.main, finq_worker.app' >/dev/null
echo "$want" > "$stamp"
