#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install Debian's docker.io when the
# engine is missing and start dockerd in the background when it is not running.
# Idempotent; safe to run before every molecule or image job.
#
# A dockerd that exits or does not answer in ENSURE_DOCKER_WAIT seconds (default 180) gets
# its log printed; when the log shows the nftables backend of iptables failing, the engine
# is started once more with Debian's legacy iptables.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

wait_seconds=${ENSURE_DOCKER_WAIT:-180}
dockerd_log=/var/log/dockerd.log

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

# Start dockerd and wait for it; 0 when it answers, 1 when it exited, 2 on timeout.
start_and_wait() {
  local pid
  if command -v systemctl >/dev/null 2>&1 && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl start docker
    pid=""
  else
    # A pid file left by an engine that is gone keeps a new one from starting.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
      rm -f /var/run/docker.pid
    fi
    log "starting dockerd (log: $dockerd_log)"
    setsid dockerd >>"$dockerd_log" 2>&1 </dev/null &
    pid=$!
  fi
  local waited=0
  while [ "$waited" -lt "$wait_seconds" ]; do
    if docker info >/dev/null 2>&1; then
      log "engine is up after ${waited} s"
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited after ${waited} s"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "dockerd did not answer within ${wait_seconds} s"
  return 2
}

show_log() {
  log "last lines of $dockerd_log:"
  tail -n 40 "$dockerd_log" >&2 || true
}

status=0
start_and_wait || status=$?
[ "$status" -eq 0 ] && exit 0
show_log

if [ "$status" -eq 1 ] && grep -qiE 'iptables|nf_tables|nftables' "$dockerd_log" \
  && command -v update-alternatives >/dev/null 2>&1 && [ -x /usr/sbin/iptables-legacy ]; then
  log "retrying with the legacy iptables backend"
  update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
  update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null
  status=0
  start_and_wait || status=$?
  [ "$status" -eq 0 ] && exit 0
  show_log
fi
exit 1
