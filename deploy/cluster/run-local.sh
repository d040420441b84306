#!/usr/bin/env bash
# A local sipbridge cluster for trying the scale-out set-up on one machine (docs/scaling.md):
# Kamailio on 127.0.0.1:5060 in front of N sipbridge instances on 127.0.0.1, all on one
# PostgreSQL database. Runs in the foreground; Ctrl-C (or SIGTERM) stops everything: the
# instances drain (new calls refused, the calls up go on until they end or --drain-timeout;
# Ctrl-C again stops them at once), then Kamailio, which carries their BYEs until the end.
#
#   deploy/cluster/run-local.sh postgresql://postgres:postgres@127.0.0.1/sipbridge [N]
#
# Instance i (1..N): id local-i, SIP (UDP and TCP) 127.0.0.1:$((5070 + i)), HTTP API
# 127.0.0.1:$((8080 + i)), RTP/RTCP ports 10000 + (i-1)*RTP_PORTS_EACH upwards (disjoint).
# Settings from the environment:
#   PROXY_ADDRESS (127.0.0.1), PROXY_PORT (5060), SIP_BASE (5070), HTTP_BASE (8080),
#   RTP_BASE (10000), RTP_PORTS_EACH (2000: 1000 calls), PING_INTERVAL (2 s),
#   PIKE_REQS (64: requests per 2 s one caller address may send through the proxy),
#   INSTANCE_TIMEOUT (30 s), SIPBRIDGE (the command: "sipbridge", or "python3 -m sipbridge"),
#   KAMAILIO (kamailio), RUN_DIR (a new temporary folder: logs, dispatcher list, pid files).
# Every other SIPBRIDGE_* variable reaches the instances (e.g. SIPBRIDGE_MAX_CALLS=100).
# Add agents, numbers and API keys once, through any instance (or `sipbridge --db URL ...`):
# they are in the shared database.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
DB_URL="$1"
COUNT="${2:-2}"
case "$COUNT" in ''|*[!0-9]*) echo "N must be a number" >&2; exit 2 ;; esac
[ "$COUNT" -ge 1 ] || { echo "N must be at least 1" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
CFG="$HERE/../kamailio/kamailio.cfg"
PROXY_ADDRESS="${PROXY_ADDRESS:-127.0.0.1}"
PROXY_PORT="${PROXY_PORT:-5060}"
SIP_BASE="${SIP_BASE:-5070}"
HTTP_BASE="${HTTP_BASE:-8080}"
RTP_BASE="${RTP_BASE:-10000}"
RTP_PORTS_EACH="${RTP_PORTS_EACH:-2000}"
PING_INTERVAL="${PING_INTERVAL:-2}"
PIKE_REQS="${PIKE_REQS:-64}"
INSTANCE_TIMEOUT="${INSTANCE_TIMEOUT:-30}"
KAMAILIO="${KAMAILIO:-kamailio}"
if [ -z "${SIPBRIDGE:-}" ]; then
  if command -v sipbridge >/dev/null 2>&1; then SIPBRIDGE=sipbridge; else SIPBRIDGE="python3 -m sipbridge"; fi
fi
RUN_DIR="${RUN_DIR:-$(mktemp -d -t sipbridge-cluster.XXXXXX)}"
mkdir -p "$RUN_DIR"

PIDS=()          # the instances
KAMAILIO_PID=""
stop_all() {
  local status="$1"
  trap - EXIT
  trap 'for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done' INT TERM
  echo "stopping: the instances drain and write their records; then Kamailio" >&2
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # (a second Ctrl-C interrupts a wait: wait again until each one has exited)
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  done
  if [ -n "$KAMAILIO_PID" ]; then
    kill -TERM "$KAMAILIO_PID" 2>/dev/null || true
    wait "$KAMAILIO_PID" 2>/dev/null || true
  fi
  exit "$status"
}
trap 'stop_all 0' INT TERM  # asked to stop
trap 'stop_all $?' EXIT     # a failed step, or a process of the cluster ended

# One migration before the instances start (each would also migrate, one at a time).
# shellcheck disable=SC2086
$SIPBRIDGE db upgrade --db "$DB_URL" >/dev/null

LIST="$RUN_DIR/dispatcher.list"
: > "$LIST"
for i in $(seq 1 "$COUNT"); do
  sip=$((SIP_BASE + i))
  http=$((HTTP_BASE + i))
  low=$((RTP_BASE + (i - 1) * RTP_PORTS_EACH))
  high=$((low + RTP_PORTS_EACH - 1))
  echo "1 sip:127.0.0.1:$sip 0 0" >> "$LIST"
  # shellcheck disable=SC2086
  SIPBRIDGE_DB="$DB_URL" $SIPBRIDGE serve \
    --instance-id "local-$i" --instance-timeout "$INSTANCE_TIMEOUT" \
    --sip-host 127.0.0.1 --sip-port "$sip" --http-port "$http" --rtp-ports "$low-$high" \
    --trusted-proxy "$PROXY_ADDRESS" \
    --spool "$RUN_DIR/records-local-$i.spool" \
    > "$RUN_DIR/local-$i.log" 2>&1 &
  PIDS+=("$!")
  echo "instance local-$i: sip 127.0.0.1:$sip http http://127.0.0.1:$http rtp $low-$high log $RUN_DIR/local-$i.log" >&2
done

"$KAMAILIO" -DD -E -f "$CFG" -Y "$RUN_DIR" \
  -A "LISTEN=udp:$PROXY_ADDRESS:$PROXY_PORT" \
  -A "DISPATCHER_LIST=\"$LIST\"" \
  -A "PING_INTERVAL=$PING_INTERVAL" \
  -A "PIKE_REQS=$PIKE_REQS" \
  > "$RUN_DIR/kamailio.log" 2>&1 &
KAMAILIO_PID="$!"
echo "kamailio: sip udp:$PROXY_ADDRESS:$PROXY_PORT log $RUN_DIR/kamailio.log" >&2
echo "calls to sip:NUMBER@$PROXY_ADDRESS:$PROXY_PORT; Ctrl-C stops the cluster" >&2

# Stop everything when any process ends (a crash shows in its log).
wait -n || true
echo "a process of the cluster ended; see $RUN_DIR" >&2
exit 1
