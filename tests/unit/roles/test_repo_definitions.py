# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render condor_install's UW repository definitions for every OS x channel.

The UW repositories are not reachable from the test machines, so this checks what the role
would configure against the facts in docs/annex-protocol.md ("Packages"):
23.0 under research.cs.wisc.edu/htcondor/repo/23.0/, 24.0 and later under
htcss-downloads.chtc.wisc.edu/repo/<channel>/, release RPMs
htcondor-release-current.<el8|el9|el10|amzn2023>.noarch.rpm, apt keys repo/keys/HTCondor-<channel>-Key,
apt lists repo/<debian|ubuntu>/htcondor-<channel>-<codename>.list, keyring + signed-by, no apt-key.
"""
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / "roles" / "condor_install"
CHANNELS = ["23.0", "24.0", "24.x", "25.0", "25.x"]

RPM_HOSTS = {
    # distribution_release is always gathered; on these hosts it is a code name or "NA".
    "el8": dict(distribution="Rocky", distribution_major_version="8", os_family="RedHat",
                distribution_release="Green Obsidian"),
    "el9": dict(distribution="AlmaLinux", distribution_major_version="9", os_family="RedHat",
                distribution_release="Teal Serval"),
    "el10": dict(distribution="RedHat", distribution_major_version="10", os_family="RedHat",
                 distribution_release="Coughlan"),
    "amzn2023": dict(distribution="Amazon", distribution_major_version="2023", os_family="RedHat",
                     distribution_release="NA"),
}
APT_HOSTS = {
    ("debian", "bookworm"): dict(distribution="Debian", distribution_release="bookworm",
                                 distribution_major_version="12", os_family="Debian"),
    ("debian", "trixie"): dict(distribution="Debian", distribution_release="trixie",
                               distribution_major_version="13", os_family="Debian"),
    ("ubuntu", "jammy"): dict(distribution="Ubuntu", distribution_release="jammy",
                              distribution_major_version="22", os_family="Debian"),
    ("ubuntu", "noble"): dict(distribution="Ubuntu", distribution_release="noble",
                              distribution_major_version="24", os_family="Debian"),
}


def _trust(obj):
    if isinstance(obj, str):
        return trust_as_template(obj)
    if isinstance(obj, dict):
        return {k: _trust(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_trust(v) for v in obj]
    return obj


def _load(rel):
    return _trust(yaml.safe_load((ROLE / rel).read_text()))


def render(expr_or_value, facts, **overrides):
    variables = dict(_load("defaults/main.yml"))
    variables.update(_load("vars/main.yml"))
    variables.update(overrides)
    variables["ansible_facts"] = dict(facts, architecture="x86_64", distribution_version="x")
    templar = Templar(loader=DataLoader(), variables=variables)
    if isinstance(expr_or_value, str):
        expr_or_value = trust_as_template(expr_or_value)
    return templar.template(expr_or_value)


def base(channel):
    if channel == "23.0":
        return "https://research.cs.wisc.edu/htcondor/repo"
    return "https://htcss-downloads.chtc.wisc.edu/repo"


def test_channels_and_default():
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    variables = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    assert variables["htcondor_supported_channels"] == CHANNELS
    assert defaults["htcondor_channel"] == "25.0"  # the current LTS
    assert defaults["htcondor_source"] == "uw"


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("platform", sorted(RPM_HOSTS))
def test_rpm_definitions(platform, channel):
    repo = render("{{ htcondor_repo }}", RPM_HOSTS[platform], htcondor_channel=channel)
    assert repo["release_rpm_url"] == (
        f"{base(channel)}/{channel}/htcondor-release-current.{platform}.noarch.rpm")
    assert repo["rpm_key_url"] == f"{base(channel)}/keys/RPM-GPG-KEY-HTCondor-{channel}"
    assert repo["rpm_key_url"].startswith("https://") and repo["release_rpm_url"].startswith("https://")


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("distro,codename", sorted(APT_HOSTS))
def test_apt_definitions(distro, codename, channel):
    repo = render("{{ htcondor_repo }}", APT_HOSTS[(distro, codename)], htcondor_channel=channel)
    assert repo["apt_key_url"] == f"{base(channel)}/keys/HTCondor-{channel}-Key"
    assert repo["apt_upstream_list_url"] == f"{base(channel)}/{distro}/htcondor-{channel}-{codename}.list"
    assert repo["apt_keyring"] == "/etc/apt/keyrings/htcondor.asc"
    assert repo["apt_source"] == (
        f"deb [signed-by=/etc/apt/keyrings/htcondor.asc] {base(channel)}/{distro}/{channel} {codename} main")


def test_no_apt_key_anywhere():
    for task_file in (ROLE / "tasks").glob("*.yml"):
        text = task_file.read_text()
        assert "apt-key" not in text and "apt_key:" not in text, task_file


@pytest.mark.parametrize("major,family,repo_id", [
    ("8", "Rocky", "powertools"), ("9", "AlmaLinux", "crb"), ("10", "Rocky", "crb"),
    ("9", "RedHat", "codeready-builder-for-rhel-9-x86_64-rpms"),
])
def test_epel_and_crb(major, family, repo_id):
    facts = dict(distribution=family, distribution_major_version=major, os_family="RedHat",
                 distribution_release="NA")
    epel = render("{{ htcondor_epel }}", facts)
    assert epel["crb_repo"] == repo_id
    assert epel["release_rpm_url"] == f"https://dl.fedoraproject.org/pub/epel/epel-release-latest-{major}.noarch.rpm"
    assert epel["key_url"] == f"https://dl.fedoraproject.org/pub/epel/RPM-GPG-KEY-EPEL-{major}"


def _package_names(task_name, facts, **overrides):
    tasks = _trust(yaml.safe_load((ROLE / "tasks/packages.yml").read_text()))
    task = next(t for t in tasks if t["name"] == task_name)
    module = "ansible.builtin.apt" if "apt" in task_name else "ansible.builtin.dnf"
    return render(task[module]["name"], facts, **overrides)


def test_version_pinning():
    deb = APT_HOSTS[("debian", "trixie")]
    el = RPM_HOSTS["el9"]
    assert _package_names("Install HTCondor packages (apt)", deb) == ["condor"]
    assert _package_names("Install HTCondor packages (apt)", deb, htcondor_version="25.0.3") == ["condor=25.0.3*"]
    assert _package_names("Install HTCondor packages (dnf)", el) == ["condor"]
    assert _package_names("Install HTCondor packages (dnf)", el, htcondor_version="25.0.3") == ["condor-25.0.3"]


@pytest.mark.parametrize("facts,supported", [
    (dict(distribution="Debian", distribution_release="bookworm"), True),
    (dict(distribution="Ubuntu", distribution_release="noble"), True),
    (dict(distribution="Rocky", distribution_major_version="10"), True),
    (dict(distribution="Amazon", distribution_major_version="2023"), True),
    (dict(distribution="Amazon", distribution_major_version="2"), False),
    (dict(distribution="Ubuntu", distribution_release="focal"), False),
])
def test_supported_platforms(facts, supported):
    platforms = yaml.safe_load((ROLE / "vars/main.yml").read_text())["htcondor_supported_platforms"]
    key = facts.get("distribution_release") or facts.get("distribution_major_version")
    assert (key in platforms.get(facts["distribution"], [])) is supported
