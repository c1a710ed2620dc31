#!/usr/bin/env bash
# Install what this project needs on a fresh Debian 12/13 machine (run as root):
#  - podman + runc + debootstrap for the test hosts (containers running systemd),
#  - a Python virtualenv at .venv with requirements.txt (ansible-core, boto3, molecule, moto ...).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in podman runc debootstrap uidmap slirp4netns fuse-overlayfs iproute2 shellcheck; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# crun fails on this kind of host (cgroups hybrid mode) and the hard nofile limit is 20000:
# make podman use runc and ulimits the host allows.
conf=/etc/containers/containers.conf.d/50-htcondor-annex.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi

venv=${HTCONDOR_ANNEX_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: pip install -r requirements.txt"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r requirements.txt
  echo "$want" >"$stamp"
fi
echo "bootstrap: ready (activate with: . $venv/bin/activate)"
