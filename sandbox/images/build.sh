#!/usr/bin/env bash
# Build (or reuse) the systemd base images the tests boot as "hosts".
# No image registry is reachable here, so images come from debootstrap.
# Usage: sandbox/images/build.sh [trixie] [sid]     (default: both)
# An image is reused while it is younger than HTCONDOR_ANNEX_IMAGE_MAX_AGE_DAYS
# (default 7) so CI does not rebuild it on every run; a clean machine builds it.
set -euo pipefail

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(trixie sid)
max_age_days=${HTCONDOR_ANNEX_IMAGE_MAX_AGE_DAYS:-7}
mirror=${HTCONDOR_ANNEX_DEBIAN_MIRROR:-http://deb.debian.org/debian}

image_age_days() {
  local created
  created=$(podman image inspect --format '{{.Created.Unix}}' "$1" 2>/dev/null) || { echo 9999; return; }
  echo $(( ($(date +%s) - created) / 86400 ))
}

for suite in "${suites[@]}"; do
  image="localhost/htcondor-annex-base:${suite}"
  if [ "$(image_age_days "$image")" -lt "$max_age_days" ]; then
    echo "reusing $image"
    continue
  fi
  rootfs=$(mktemp -d /var/tmp/htcondor-annex-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "building $image (debootstrap $suite)"
  timeout 900 debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,python3,python3-apt,ca-certificates,iproute2,procps,sudo \
    "$suite" "$rootfs" "$mirror" >/dev/null
  # No getty/console noise in containers; apt must not hang on prompts.
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* || true
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/90no-recommends"
  tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "built $image"
done
