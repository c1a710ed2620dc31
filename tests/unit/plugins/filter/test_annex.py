# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters give the roles the modules' rules (pool identity, managed-by tag, worker image
tags), and every filter is documented."""
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.htcondor.annex.plugins.filter import annex as filters
from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol, aws, worker_image

FILTER_DIR = Path(filters.__file__).resolve().parent
MANAGED = {aws.MANAGED_BY_KEY: aws.MANAGED_BY_VALUE}


@pytest.mark.parametrize("version, identity", [
    ("23.9.6", "condor_pool@*"),
    ("$CondorVersion: 23.0.12 2024-06-13 BuildID: 742143 $", "condor_pool@*"),
    ("24.0.1", "condor@password"),
    ("25.14.1", "condor@password"),
    ([23, 9, 6], "condor_pool@*"),
    ((24, 0, 0), "condor@password"),
    ("", "condor@password"),
    (None, "condor@password"),
    ("not a version", "condor@password"),
])
def test_pool_identity_is_the_protocols(version, identity):
    assert filters.pool_identity(version) == identity
    parsed = annex_protocol.parse_condor_version(version) if isinstance(version, str) else (
        tuple(version) if version else None)
    assert identity == annex_protocol.pool_identity(parsed)


def test_managed_tags_add_the_project_tag_last():
    tags = filters.managed_tags({"team": "x", aws.MANAGED_BY_KEY: "someone-else"},
                                {"Name": "condor-master"}, {"Name": "override", "n": 1})
    assert tags == dict(MANAGED, team="x", Name="override", n="1")
    assert filters.managed_tags(None) == MANAGED
    assert filters.managed_tags({}) == aws.managed_tags({})


def test_managed_tags_refuse_a_non_dict():
    with pytest.raises(AnsibleFilterError, match="expected a dict"):
        filters.managed_tags(["Name"])


def test_managed_tags_refuse_what_aws_refuses():
    """The roles tag the master, its group and the worker images through this filter: the
    modules' tag check applies, before any AWS call (issue 15 item 7)."""
    with pytest.raises(AnsibleFilterError, match="contains '&'"):
        filters.managed_tags({"lab": "R&D"})
    with pytest.raises(AnsibleFilterError, match="51 tags"):
        filters.managed_tags(dict(("k%d" % i, "v") for i in range(50)))


@pytest.mark.parametrize("region, partition", [
    ("us-east-1", "aws"), ("eu-west-1", "aws"), ("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"),
    ("us-gov-west-1", "aws-us-gov"),
])
def test_aws_partition_of_a_region(region, partition):
    assert filters.aws_partition(region) == partition


def test_managed_tag_filters():
    assert filters.managed_tag_filters({"htcondor-annex:role": "master"}) == {
        "tag:htcondor-annex:role": "master", "tag:%s" % aws.MANAGED_BY_KEY: aws.MANAGED_BY_VALUE}


def test_worker_image_tags_are_what_the_module_reads():
    tags = filters.worker_image_tags({"team": "x", worker_image.ROLE_KEY: "other"}, name="img", version="25.0.3",
                                     os="debian13", source="uw", channel="25.0")
    assert tags == dict(MANAGED, team="x", **{
        worker_image.NAME_KEY: "img", worker_image.ROLE_KEY: worker_image.ROLE_WORKER_IMAGE,
        worker_image.OS_KEY: "debian13", worker_image.HTCONDOR_SOURCE_KEY: "uw",
        worker_image.HTCONDOR_CHANNEL_KEY: "25.0", worker_image.HTCONDOR_VERSION_KEY: "25.0.3"})
    # the module's DescribeImages filters select exactly such an image
    for flt in worker_image.worker_image_filters():
        if flt["Name"].startswith("tag:"):
            assert tags[flt["Name"][4:]] in flt["Values"]


def test_worker_image_tags_need_every_part():
    with pytest.raises(AnsibleFilterError, match="version, channel"):
        filters.worker_image_tags({}, name="img", os="debian13", source="uw")


def test_every_filter_is_documented():
    names = set(filters.FilterModule().filters())
    for name in names:
        doc = yaml.safe_load((FILTER_DIR / ("%s.yml" % name)).read_text())
        assert doc["DOCUMENTATION"]["name"] == name
        assert doc["EXAMPLES"] and doc["RETURN"]["_value"]
    documented = {p.stem for p in FILTER_DIR.glob("*.yml")}
    assert documented == names


def test_worker_image_tags_mark_a_boot_agent_image():
    from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol as proto
    parts = dict(name="img", version="25.0.3", os="debian13", source="uw", channel="25.0")
    tags = filters.worker_image_tags({}, boot_agent=True, **parts)
    assert tags[proto.BOOT_AGENT_IMAGE_TAG] == proto.BOOT_AGENT_VERSION
    assert worker_image.boot_agent(tags) is True
    assert proto.BOOT_AGENT_IMAGE_TAG not in filters.worker_image_tags({}, **parts)
