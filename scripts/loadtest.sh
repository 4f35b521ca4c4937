#!/usr/bin/env bash
# Locust against the running local stack (`make run`), through nginx on 127.0.0.1.
#
#   scripts/loadtest.sh          headless, bounded by DURATION (+ GRACE); CSV + HTML report in
#                                $RUN_DIR/loadtest/; exits non-zero when completed tasks/s <
#                                MIN_TASKS_PER_SEC or any task failed, was lost or rejected
#   scripts/loadtest.sh --ui     the Locust web UI on 127.0.0.1:8089, same users; every run
#                                started there stops by itself after DURATION (+ GRACE)
#
# Variables (defaults): USERS (24: tasks in flight, 2 per worker process of the default stack),
# SPAWN_RATE (USERS per second), DURATION (60s), GRACE (30: seconds in-flight tasks may take to
# finish after DURATION before they count as lost), MIN_TASKS_PER_SEC (12), FOLLOW (sse|poll),
# HTTP_PORT (else RUN_DIR/stack.json, else 8080), RUN_DIR (.run), FINQ_USERNAME/FINQ_PASSWORD
# (else the stack's admin account from RUN_DIR/stack.json). Extra arguments go to locust.
# LOADTEST_ACCOUNTS (8): with the admin's credentials the run creates that many throwaway
# accounts (deleted at the end) and the users take turns on them, so the stack keeps its rate
# limits on (they count per account); 429s are reported as throttled.
# MIX_SCALE (auto): the two heavy rows of the mix are timed on this machine at start-up and
# sized so that each costs the CPU the table says (the mean task stays near 100 ms on a slower
# or faster CPU); a number scales them by that factor, 1 keeps the table's sizes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$here/.venv/bin/python"
locust="$here/.venv/bin/locust"
RUN_DIR="${RUN_DIR:-$here/.run}"
USERS="${USERS:-24}"
SPAWN_RATE="${SPAWN_RATE:-$USERS}"
DURATION="${DURATION:-60s}"
GRACE="${GRACE:-30}"
MIN_TASKS_PER_SEC="${MIN_TASKS_PER_SEC:-12}"
FOLLOW="${FOLLOW:-sse}"
MIX_SCALE="${MIX_SCALE:-auto}"
export RUN_DIR MIN_TASKS_PER_SEC MIX_SCALE

ui=0
if [[ "${1:-}" == "--ui" ]]; then
  ui=1
  shift
fi

# The stack: nginx's port from HTTP_PORT, else the stack.json `make run` wrote.
stack_json="$RUN_DIR/stack.json"
stack_value() {  # stack_value KEY: a value of stack.json, empty when absent
  [[ -r "$stack_json" ]] || return 0
  "$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' \
    "$stack_json" "$1"
}
port="${HTTP_PORT:-$(stack_value HTTP_PORT)}"
port="${port:-8080}"
host="http://127.0.0.1:$port"

if ! "$py" - "$host" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/health/ready", timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:
    print(f"loadtest: no ready finq stack at {sys.argv[1]} ({exc}); start one with "
          "`make run` (or set HTTP_PORT / RUN_DIR)", file=sys.stderr)
    sys.exit(1)
EOF
then
  exit 2
fi
if [[ -z "${FINQ_PASSWORD:-}" && -z "$(stack_value ADMIN_PASSWORD)" ]]; then
  echo "loadtest: no credentials: set FINQ_USERNAME/FINQ_PASSWORD or RUN_DIR" >&2
  exit 2
fi

out="$RUN_DIR/loadtest"
mkdir -p "$out"
common=(-f "$here/loadtest/locustfile.py" --host "$host" -u "$USERS" -r "$SPAWN_RATE"
        --run-time "$DURATION" --stop-timeout "$GRACE" --finq-follow "$FOLLOW"
        --finq-min-tasks-per-sec "$MIN_TASKS_PER_SEC")

if (( ui )); then
  echo "Locust UI: http://127.0.0.1:8089  (target $host, $USERS users; each run stops after" \
       "$DURATION + ${GRACE}s grace)"
  exec "$locust" "${common[@]}" --web-host 127.0.0.1 --web-port 8089 \
    --finq-summary "$out/ui_tasks.json" "$@"
fi

# Bound the whole run: DURATION + GRACE + a minute for start-up and reports.
run_seconds="$("$py" -c '
import re, sys
parts = re.findall(r"(\d+)\s*([hms]?)", sys.argv[1])
print(sum(int(n) * {"h": 3600, "m": 60}.get(u, 1) for n, u in parts))' "$DURATION")"
limit=$(( run_seconds + ${GRACE%.*} + 60 ))

echo "loadtest: $USERS users (spawn $SPAWN_RATE/s) for $DURATION against $host;" \
     "reports in $out/"
rm -f "$out"/locust_*.csv "$out/locust_tasks.json" "$out/report.html"
set +e
timeout --signal=INT --kill-after=20 "$limit" "$locust" "${common[@]}" --headless \
  --csv "$out/locust" --html "$out/report.html" --logfile "$out/locust.log" \
  --only-summary "$@"
code=$?
set -e

summary="$out/locust_tasks.json"
if [[ ! -r "$summary" ]]; then
  echo "loadtest: locust exited $code without a task summary (see $out/locust.log)" >&2
  exit $(( code ? code : 1 ))
fi
status=0
"$py" - "$summary" "$MIN_TASKS_PER_SEC" <<'EOF' || status=$?
import json, sys
s = json.load(open(sys.argv[1]))
fmt = lambda v: "-" if v is None else f"{v:,.0f} ms"
print()
print(f"completed tasks/s : {s['tasks_per_sec']:.2f}  (minimum {float(sys.argv[2]):g}; "
      f"{s['completed_in_window']} tasks in {s['window_s']:.1f} s)")
print(f"submit-to-done    : p50 {fmt(s['p50_ms'])}, p95 {fmt(s['p95_ms'])}, "
      f"p99 {fmt(s['p99_ms'])}, max {fmt(s['max_ms'])}")
print(f"tasks             : {s['submitted']} submitted, {s['completed']} completed, "
      f"{s['failed']} failed, {s['lost']} lost, {s['rejected']} rejected "
      f"({s.get('throttled', 0)} throttled, 429)")
for line in s["failures"][:5]:
    print(f"  failed: {line}")
print("result            : " + ("FAIL: " + "; ".join(s["problems"]) if s["problems"] else "PASS"))
sys.exit(1 if s["problems"] else 0)
EOF
if (( status == 0 && code != 0 )); then
  echo "loadtest: locust exited $code (see $out/locust.log)" >&2
  exit "$code"
fi
exit "$status"
