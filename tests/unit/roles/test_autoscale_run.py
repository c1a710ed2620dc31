# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autoscaler's run (roles/annex/templates/autoscale_run.yml.j2) and its systemd units, rendered
by Ansible from the role's own defaults and vars: the run is a playbook the master's ansible-core
accepts, every option it gives a module is one that module takes (argument specs of the real
modules), values keep their types, and the units run that file as the annex user, every interval,
bounded in time."""
import configparser
import json
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.htcondor.annex.plugins.modules import annex, annex_autoscale

from conftest import tool

ROLE = "roles/annex"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{role}/defaults/main.yml, {role}/vars/main.yml, {extra}]
  tasks:
    - ansible.builtin.template:
        src: {role}/templates/{{{{ item.src }}}}
        dest: {out}/{{{{ item.dest }}}}
        mode: "0644"
      loop:
        - {{src: autoscale_run.yml.j2, dest: run.yml}}
        - {{src: autoscale.service.j2, dest: unit.service}}
        - {{src: autoscale.timer.j2, dest: unit.timer}}
"""

SETTINGS = {
    "htcondor_annex_name": "Auto-1",
    "htcondor_annex_user": "ec2-user",
    "htcondor_annex_budget_usd": 12.5,
    "htcondor_annex_max_instances": 3,
    "htcondor_annex_instance_types": ["t3.micro", "t3.small"],
    "htcondor_annex_price_per_hour": {"t3.micro": 0.0104},
    "htcondor_annex_expiry": "2026-12-18 23:59",
    "htcondor_annex_autoscale_interval": 20,
    "htcondor_annex_region": "eu-west-1",
    "htcondor_annex_access_key_file": "~/.condor/publicKeyFile",
    "htcondor_annex_secret_key_file": "~/.condor/privateKeyFile",
    "htcondor_annex_max_price_per_hour": 0.5,
    "htcondor_annex_worker_tags": {"project": "x"},
}


@pytest.fixture(scope="module")
def rendered(repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("autoscale")
    (out / "extra.yml").write_text(yaml.safe_dump(SETTINGS))
    (out / "render.yml").write_text(PLAYBOOK.format(role=repo / ROLE, out=out, extra=out / "extra.yml"))
    env = dict(os.environ, ANSIBLE_CONFIG=str(repo / "ansible.cfg"))
    res = subprocess.run([tool("ansible-playbook"), "-i", "localhost,", "-e", "ansible_python_interpreter=" + sys.executable,
                          str(out / "render.yml")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def tasks(rendered):
    play = yaml.safe_load((rendered / "run.yml").read_text())
    assert len(play) == 1 and play[0]["hosts"] == "localhost" and play[0]["connection"] == "local"
    return play[0], dict((t["name"], t) for t in play[0]["tasks"])


def test_every_option_is_one_the_module_takes(rendered):
    play, by_name = tasks(rendered)
    aws = play["module_defaults"]["group/htcondor.annex.annex"]
    assert aws == {"region": "eu-west-1", "access_key_file": "~/.condor/publicKeyFile",
                   "secret_key_file": "~/.condor/privateKeyFile"}
    decide = by_name["Decide"]["htcondor.annex.annex_autoscale"]
    record = by_name["Record the launch's outcome"]["htcondor.annex.annex_autoscale"]
    launch = by_name["Launch what the decision asks for"]["htcondor.annex.annex"]
    assert set(decide) <= set(annex_autoscale.argument_spec()), set(decide) - set(annex_autoscale.argument_spec())
    assert set(record) <= set(annex_autoscale.argument_spec()), set(record) - set(annex_autoscale.argument_spec())
    assert set(launch) <= set(annex.argument_spec()), set(launch) - set(annex.argument_spec())
    assert set(aws) <= set(annex.argument_spec()) & set(annex_autoscale.argument_spec())
    # the values keep their types (numbers are numbers, the price map a map)
    assert decide["budget_usd"] == 12.5 and decide["max_instances"] == 3 and decide["spot"] is False
    assert decide["instance_types"] == ["t3.micro", "t3.small"]
    assert decide["price_per_hour"] == {"t3.micro": 0.0104}
    assert decide["expiry"] == "2026-12-18 23:59"  # given: kept as is
    assert dict(record, record_launch=None) == dict(decide, record_launch=None)
    assert launch["max_price_per_hour"] == 0.5 and launch["tags"] == {"project": "x"} and launch["state"] == "present"
    # count, types and the lease end come from the decision (the same absolute lease on every run)
    assert launch["count"] == "{{ decision.target_count }}"
    assert launch["expiry"] == "{{ decision.lease_end }}"
    assert by_name["Launch what the decision asks for"]["when"] == "decision.instance_types_to_launch | length > 0"
    assert by_name["Launch what the decision asks for"]["ignore_errors"] is True


def test_the_run_passes_ansible_syntax_check(repo, rendered):
    env = dict(os.environ, ANSIBLE_CONFIG=str(repo / "ansible.cfg"))
    res = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(rendered / "run.yml")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_units_run_it_as_the_annex_user_every_interval_bounded(rendered):
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read_string((rendered / "unit.service").read_text())
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read_string((rendered / "unit.timer").read_text())
    assert service["Service"]["User"] == "ec2-user"
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].endswith(" /etc/htcondor-annex/autoscale/Auto-1.yml")
    assert int(service["Service"]["TimeoutStartSec"]) == 300
    assert timer["Timer"]["OnUnitActiveSec"] == "20s"
    assert timer["Install"]["WantedBy"] == "timers.target"
    print(json.dumps({k: dict(service[k]) for k in service.sections()}))
