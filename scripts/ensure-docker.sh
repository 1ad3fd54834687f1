#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: install Debian's docker.io when the
# engine is missing and start dockerd in the background when it is not running.
# Idempotent; safe to run before every molecule or image job.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

if command -v systemctl >/dev/null 2>&1 && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl start docker
else
  log "starting dockerd (log: /var/log/dockerd.log)"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
fi

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { log "engine is up"; exit 0; }
  sleep 1
done
log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
exit 1
