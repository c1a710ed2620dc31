# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTCondor's own parser accepts the worker tarball the annex module uploads.

The tarball is taken from moto's bucket after a real module launch, unpacked into
/etc/condor/config.d of a throwaway container (as the stock boot script does) next to the
stock 50ec2.config of condor-annex-ec2, and read back with condor_config_val: Debian trixie
(HTCondor 23.9.6) and sid (25.x)."""

import shutil
import subprocess
import uuid

import boto3
import pytest

from annex_helpers import REGION, aws_env, moto, run_module, tag_boot_agent_image  # noqa: F401 pylint: disable=unused-import
from ansible_collections.htcondor.annex.plugins.modules import annex, annex_setup

pytestmark = [pytest.mark.condor, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
AMI = "ami-04681a1dbd79675a5"


def podman(*args, timeout=300):
    return subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("release,version,identity", [("trixie", "23.9.6", "condor_pool@*"),
                                                      ("sid", "25.14.1", "condor@password")])
def test_worker_config_accepted_by_condor(moto, tmp_path, release, version, identity):
    if not shutil.which("podman"):
        pytest.skip("podman not installed")
    image = "localhost/htcondor-annex-base:%s" % release
    if podman("image", "exists", image).returncode != 0:
        pytest.skip("base image %s not built (sandbox/images/build.sh)" % image)
    setup = run_module(annex_setup, {})
    tag_boot_agent_image()
    password = tmp_path / "POOL"
    password.write_bytes(b"\xad\x9e\xdd\x9d\xbb\xd9")
    extra = tmp_path / "site.config"
    extra.write_text("NUM_CPUS = 2\n")
    result = run_module(annex, dict(name="cfg-test", count=1, ami_id=AMI, password_file=str(password),
                                    collector_host="cm.example.org:9618", condor_version=version,
                                    owners=["alice", "bob"], config_files=[str(extra)]))
    assert result["changed"], result
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=setup["bucket"], Key="config-cfg-test.tar.gz")["Body"].read()
    unpacked = tmp_path / "annex"
    unpacked.mkdir()
    (unpacked / "config-cfg-test.tar.gz").write_bytes(body)
    name = "annex-cfg-%s" % uuid.uuid4().hex[:8]
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get -o Acquire::Check-Valid-Until=false update -qq >/dev/null; "
        "apt-get install -y -qq --no-install-recommends condor condor-annex-ec2 >/dev/null 2>&1 || "
        "apt-get install -y -qq --no-install-recommends condor >/dev/null; "
        # untar where this version's stock boot script does: config.d (<= 24.10) or /etc/condor (24.11+)
        "dir=$(grep -o 'tar --no-same-owner -C [^ ]*' /usr/libexec/condor/condor-annex-ec2 | cut -d' ' -f4); "
        "test -d \"$dir\"; tar --no-same-owner -C \"$dir\" -x -z -f /annex/config-cfg-test.tar.gz; "
        "stat -c '%a %U' /etc/condor/config.d/password_file.pl; ls /etc/condor/config.d; "
        "condor_config_val AnnexName IsAnnex STARTD_NOCLAIM_SHUTDOWN START SEC_PASSWORD_FILE "
        "ANNEX_POOL_IDENTITY ALLOW_DAEMON COLLECTOR_HOST SEC_DEFAULT_ENCRYPTION NUM_CPUS; "
        "echo ---; condor_config_val -subsystem STARTD DAEMON_SHUTDOWN; "
        "condor_config_val -subsystem MASTER DAEMON_SHUTDOWN_FAST; condor_config_val STARTD_ATTRS; "
        "echo ---; condor_config_val -dump >/dev/null && echo parsed-ok")
    proc = podman("run", "--rm", "--name", name, "-v", "%s:/annex:ro,Z" % unpacked, image,
                  "sh", "-c", script, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "parsed-ok" in out
    assert "50ec2.config" in out  # the stock condor-annex-ec2 config was there too, and ours still wins
    assert "600 root" in out  # the pool password landed owner-only in config.d
    values = out.split("---")[0].strip().splitlines()[-10:]
    assert values[0] == '"cfg-test"' and values[1] == "TRUE"
    assert values[2] == "900"
    assert values[3] == '(MayUseAWS == TRUE) && stringListMember(Owner, "alice,bob")'
    assert values[4] == "/etc/condor/config.d/password_file.pl"
    assert values[5] == identity
    assert values[6].startswith(identity + "/*")
    assert values[7] == "cm.example.org:9618" and values[8] == "REQUIRED" and values[9] == "2"
    lease = out.split("---")[1]
    assert "time() >" in lease and "AnnexName IsAnnex" in lease
