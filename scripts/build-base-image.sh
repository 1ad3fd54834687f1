#!/usr/bin/env bash
# Build a local Debian base image with systemd for molecule, the local target and image builds.
# No registry is needed: debootstrap fetches from the Debian archive and `docker import` loads it.
#
#   scripts/build-base-image.sh [--force] SUITE [SUITE...]      # SUITE: bullseye, bookworm, trixie
#
# The image is tagged devops-channels/debian:SUITE and labelled with a hash of this script, so a
# changed recipe rebuilds it and an unchanged one is reused (a run with the image present takes <1 s).
# The host's extra CA certificates (/usr/local/share/ca-certificates/*.crt) are copied in, so pip and
# apt work behind an HTTPS-intercepting proxy exactly as on the host.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=${BASE_IMAGE_REPO:-devops-channels/debian}
PACKAGES=python3,python3-apt,ca-certificates,systemd,systemd-sysv,dbus,procps,iproute2,sudo
force=0
log() { printf '[base-image] %s\n' "$*" >&2; }

suites=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    bullseye|bookworm|trixie) suites+=("$arg") ;;
    *) log "unknown suite or option: $arg (want bullseye, bookworm or trixie)"; exit 2 ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || { log "usage: $0 [--force] SUITE..."; exit 2; }

recipe=$( { cat "$0"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } | sha256sum | cut -c1-16)

command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null

for suite in "${suites[@]}"; do
  tag="$REPO:$suite"
  have=$(docker image inspect -f '{{ index .Config.Labels "org.devops-channels.recipe" }}' "$tag" 2>/dev/null || true)
  if [ "$force" = 0 ] && [ "$have" = "$recipe" ]; then
    log "$tag is up to date"
    continue
  fi
  start=$(date +%s)
  rootfs=$(mktemp -d "/var/tmp/rootfs-$suite.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $suite into $rootfs"
  debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  fi
  # Lean image: no package lists or caches; roles refresh the lists themselves.
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/var/log/*.log
  # An old mtime marks the (empty) lists as stale, so apt's cache_valid_time triggers an update.
  touch -d @0 "$rootfs"/var/lib/apt/lists
  # systemd in a container: no getty on the console, no units that need real hardware.
  chroot "$rootfs" systemctl mask getty.target console-getty.service systemd-udevd.service \
    systemd-remount-fs.service systemd-firstboot.service >/dev/null 2>&1 || true
  : >"$rootfs/etc/machine-id"
  tar -C "$rootfs" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    -c "LABEL org.devops-channels.recipe=$recipe org.devops-channels.suite=$suite" \
    - "$tag" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
  log "built $tag in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{ .Size }}' "$tag" | numfmt --to=iec))"
done
