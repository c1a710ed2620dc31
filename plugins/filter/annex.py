# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rules the roles need that the modules already know: one home, in module_utils.

- pool_identity: the identity PASSWORD authentication maps to for an HTCondor version
  (annex_protocol.pool_identity, what the annex module puts in the workers' configuration).
- managed_tags / managed_tag_filters: the tag that marks a resource as this project's
  (aws.MANAGED_BY_KEY = aws.MANAGED_BY_VALUE, what the modules tag with and teardown looks for).
- worker_image_tags: the tags of a worker image (worker_image.py reads them to pick the AMI).
- aws_partition: the partition of a region (aws.partition_of), for ARNs written outside templates.

The documentation of each filter is in the YAML file of the same name next to this one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.htcondor.annex.plugins.module_utils import annex_protocol
from ansible_collections.htcondor.annex.plugins.module_utils import aws
from ansible_collections.htcondor.annex.plugins.module_utils import worker_image


def _tag_dict(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AnsibleFilterError("%s: expected a dict of tags, got %s" % (what, type(value).__name__))
    return dict((str(k), str(v)) for k, v in value.items())


def pool_identity(version):
    """'23.9.6' (or condor_version's banner, or a (23, 9, 6) sequence) -> the pool identity.

    An empty or unparsable version is taken as a current one (condor@password)."""
    if isinstance(version, (list, tuple)):
        parsed = tuple(int(part) for part in version) or None
    elif version is None:
        parsed = None
    else:
        parsed = annex_protocol.parse_condor_version(str(version))
    return annex_protocol.pool_identity(parsed)


def managed_tags(tags=None, *more):
    """The tags, then each dict in more, then the project's managed-by tag (it always wins)."""
    merged = _tag_dict(tags, "managed_tags")
    for extra in more:
        merged.update(_tag_dict(extra, "managed_tags"))
    merged = aws.managed_tags(merged)
    error = aws.validate_tags(merged)  # the same check as the modules', before any AWS call
    if error:
        raise AnsibleFilterError("managed_tags: %s" % error)
    return merged


def managed_tag_filters(tags=None, *more):
    """EC2 Describe* filters matching the project's resources with these tags (tag:KEY: VALUE)."""
    return dict(("tag:%s" % key, value) for key, value in managed_tags(tags, *more).items())


def worker_image_tags(tags=None, name=None, version=None, os=None, source=None, channel=None, boot_agent=False):
    """The tags of a worker image, as build_worker_ami.yml puts them and the annex module reads them;
    boot_agent: the image runs the collection's worker boot agent (its workers launch IMDSv2-only)."""
    missing = [arg for arg, value in (("name", name), ("version", version), ("os", os),
                                      ("source", source), ("channel", channel)) if not value]
    if missing:
        raise AnsibleFilterError("worker_image_tags: %s must be given" % ", ".join(missing))
    ours = {worker_image.BOOT_AGENT_IMAGE_TAG: worker_image.BOOT_AGENT_VERSION} if boot_agent else {}
    return managed_tags(tags, ours, {
        worker_image.NAME_KEY: name,
        worker_image.ROLE_KEY: worker_image.ROLE_WORKER_IMAGE,
        worker_image.OS_KEY: os,
        worker_image.HTCONDOR_SOURCE_KEY: source,
        worker_image.HTCONDOR_CHANNEL_KEY: channel,
        worker_image.HTCONDOR_VERSION_KEY: version,
    })


def aws_partition(region):
    """'cn-north-1' -> 'aws-cn' (botocore's endpoints data)."""
    if not region:
        raise AnsibleFilterError("aws_partition: a region must be given")
    return aws.partition_of(str(region))


class FilterModule(object):
    def filters(self):
        return {
            "pool_identity": pool_identity,
            "managed_tags": managed_tags,
            "managed_tag_filters": managed_tag_filters,
            "worker_image_tags": worker_image_tags,
            "aws_partition": aws_partition,
        }
