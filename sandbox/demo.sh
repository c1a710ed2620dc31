#!/usr/bin/env bash
# The whole flow on this machine, no AWS account needed (run as root from a fresh clone):
#   bash sandbox/demo.sh            # trixie / HTCondor 23.9.6; removes the sandbox at the end
#   bash sandbox/demo.sh sid        # sid / HTCondor 25.14.1
#   KEEP=1 bash sandbox/demo.sh     # leave it running (remove later: ansible-playbook teardown.yml -e confirm=yes)
# Installs what is missing, builds the base image, then runs the README's three commands with two
# workers, submits the seed's five sleep jobs (+MayUseAWS, 20 s) and shows condor_status -annex
# and condor_history from the master.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-trixie}
bash scripts/bootstrap.sh
bash sandbox/images/build.sh "$suite"
export PATH="$PWD/.venv/bin:$PATH"
master() { podman exec htcondor-annex-sandbox-master su - ec2-user -c "$1"; }
start=$(date +%s)
cleanup() { [ "${KEEP:-0}" = 1 ] || ansible-playbook teardown.yml -e confirm=yes; }
trap cleanup EXIT

ansible-playbook site.yml -e sandbox_suite="$suite"
ansible-playbook annex_start.yml -e count=2
echo "== condor_status -annex MyFirstAnnex"
master 'condor_status -annex MyFirstAnnex'
master "cd annex-jobs && sed 's/^arguments.*/arguments = 20/; s/^queue.*/queue 5/' sleep-on-aws.submit > five.submit && condor_submit five.submit"
for _ in $(seq 60); do   # bounded: at most ~3 minutes
  [ "$(master 'condor_history -constraint "JobStatus == 4" -af ClusterId' | wc -l)" -ge 5 ] && break
  sleep 3
done
echo "== condor_history (the five jobs, where they ran)"
master 'condor_history -af:h ClusterId ProcId Owner JobStatus LastRemoteHost RemoteWallClockTime'
echo "== whole run so far: $(( $(date +%s) - start )) s"
