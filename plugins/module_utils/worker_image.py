# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Worker images built by the collection (build_worker_ami.yml) and how a launch picks one.

The images carry the tags below (the interface with build_worker_ami.yml; do not rename them).
For a launch without ami_id the newest available image owned by the account is used whose
architecture the instance type supports and whose HTCondor version is closest to the pool's:
exact version, else the same major.minor, else the same major. Another major version is never
used: workers of another major version may not speak the pool's security configuration.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.htcondor.annex.plugins.module_utils.aws import (
    MANAGED_BY_KEY, MANAGED_BY_VALUE, AnnexAWSError, call, describe_or_none, error_code, paginate, tag_dict,
)
from ansible_collections.htcondor.annex.plugins.module_utils.annex_protocol import (
    BOOT_AGENT_IMAGE_TAG, BOOT_AGENT_VERSION, parse_condor_version,
)

ROLE_KEY = "htcondor-annex:role"
ROLE_WORKER_IMAGE = "worker-image"
HTCONDOR_VERSION_KEY = "htcondor-annex:htcondor-version"
OS_KEY = "htcondor-annex:os"
HTCONDOR_SOURCE_KEY = "htcondor-annex:htcondor-source"
HTCONDOR_CHANNEL_KEY = "htcondor-annex:htcondor-channel"
NAME_KEY = "Name"

SOURCE_GIVEN = "given"
SOURCE_NEWEST = "newest project worker image"

# Best first: how many leading version parts must equal the pool's.
TIERS = ((3, "exact version"), (2, "same major.minor"), (1, "same major"))
LISTED_MAX = 5
BUILD_HINT = "build one with `ansible-playbook build_worker_ami.yml` (see README) or pass ami_id"


def version_text(version):
    return ".".join(str(part) for part in version) if version else "?"


def worker_image_filters():
    """DescribeImages filters of the project's available worker images."""
    return [
        {"Name": "tag:%s" % MANAGED_BY_KEY, "Values": [MANAGED_BY_VALUE]},
        {"Name": "tag:%s" % ROLE_KEY, "Values": [ROLE_WORKER_IMAGE]},
        {"Name": "state", "Values": ["available"]},
    ]


def boot_agent(tags):
    """Whether an image with these tags runs the collection's worker boot agent (IMDSv2 only)."""
    return tags.get(BOOT_AGENT_IMAGE_TAG) == BOOT_AGENT_VERSION


def describe_image_by_id(ec2, image_id):
    """dict(image_id, name, boot_agent) of one image (one DescribeImages), None if it is unknown."""
    response = describe_or_none(lambda: call(ec2, "DescribeImages", ImageIds=[image_id]),
                                "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable")
    images = (response or {}).get("Images") or []
    if not images:
        return None
    tags = tag_dict(images[0].get("Tags"))
    return dict(image_id=images[0]["ImageId"], name=images[0].get("Name"), boot_agent=boot_agent(tags))


def describe_worker_images(ec2):
    """Every available worker image the account owns, as dicts (newest first)."""
    images = []
    for image in paginate(ec2, "DescribeImages", "Images", Owners=["self"], Filters=worker_image_filters()):
        tags = tag_dict(image.get("Tags"))
        # Filters are the server's job; checked again so a lax endpoint cannot slip others in.
        if tags.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE or tags.get(ROLE_KEY) != ROLE_WORKER_IMAGE:
            continue
        if image.get("State", "available") != "available":
            continue
        images.append(dict(
            image_id=image["ImageId"],
            name=image.get("Name") or tags.get(NAME_KEY),
            architecture=image.get("Architecture"),
            creation_date=image.get("CreationDate") or "",
            version_tag=tags.get(HTCONDOR_VERSION_KEY),
            version=parse_condor_version(tags.get(HTCONDOR_VERSION_KEY)),
            os=tags.get(OS_KEY),
            htcondor_source=tags.get(HTCONDOR_SOURCE_KEY),
            htcondor_channel=tags.get(HTCONDOR_CHANNEL_KEY),
            boot_agent=boot_agent(tags),
        ))
    images.sort(key=lambda i: (i["creation_date"], i["name"] or "", i["image_id"]), reverse=True)
    return images


def supported_architectures(ec2, instance_type, region):
    """ProcessorInfo.SupportedArchitectures of an instance type; a clear error if unknown."""
    try:
        response = call(ec2, "DescribeInstanceTypes", InstanceTypes=[instance_type])
    except AnnexAWSError as exc:
        if error_code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
            raise AnnexAWSError(
                "instance type %r is not offered in region %s (DescribeInstanceTypes does not know it): "
                "check instance_type, e.g. t3.micro" % (instance_type, region), code="InvalidInstanceType",
                exception=exc.exception)
        raise
    types = response.get("InstanceTypes") or []
    if not types:
        raise AnnexAWSError("instance type %r is not offered in region %s: check instance_type, e.g. t3.micro"
                            % (instance_type, region), code="InvalidInstanceType")
    return list(types[0].get("ProcessorInfo", {}).get("SupportedArchitectures") or [])


def tier_of(image_version, pool_version):
    """Index into TIERS of the best tier the image is in, or None (other major / unknown version)."""
    if not image_version or not pool_version:
        return None
    image, pool = tuple(image_version)[:3], tuple(pool_version)[:3]
    for index, (parts, _label) in enumerate(TIERS):
        if image[:parts] == pool[:parts]:
            return index
    return None


def describe_image(image):
    return "%s %s (HTCondor %s, %s%s, %s)" % (
        image["image_id"], image["name"] or "-", image["version_tag"] or "unknown version",
        image["architecture"] or "?", ", " + image["os"] if image["os"] else "", image["creation_date"][:10] or "?")


def choose(images, pool_version, architectures):
    """(image, tier label) of the newest image of the best non-empty tier, or (None, None).
    images must be newest first (as describe_worker_images returns them)."""
    best = None
    for image in images:
        if image["architecture"] not in architectures:
            continue
        tier = tier_of(image["version"], pool_version)
        if tier is None:
            continue
        if best is None or tier < best[1]:  # newest first: only a better tier replaces it
            best = (image, tier)
    if best is None:
        return None, None
    return best[0], TIERS[best[1]][1]


def no_match_message(images, pool_version, architectures, instance_type, region):
    arch = "/".join(architectures) or "none"
    if images:
        listed = "; ".join(describe_image(i) for i in images[:LISTED_MAX])
        if len(images) > LISTED_MAX:
            listed += "; and %d more" % (len(images) - LISTED_MAX)
        found = "The project's worker images in %s: %s." % (region, listed)
    else:
        found = "The account has no project worker images in %s." % region
    return ("count needs ami_id or a matching worker image: no available htcondor.annex worker image in region %s "
            "has HTCondor %d.x (the pool runs %s; another major version is never used) for architecture %s "
            "(instance type %s). %s To fix it, %s." % (
                region, pool_version[0], version_text(pool_version), arch, instance_type, found, BUILD_HINT))


def find_worker_image(ec2, pool_version, instance_type, region):
    """The worker image for launching instance_type workers into a pool of pool_version.

    Returns dict(image_id, name, architecture, creation_date, version_tag, tier, ...); raises
    AnnexAWSError (code NoWorkerImage or InvalidInstanceType) with a message saying how to fix it.
    Two read calls: DescribeInstanceTypes, DescribeImages (paginated)."""
    architectures = supported_architectures(ec2, instance_type, region)
    images = describe_worker_images(ec2)
    image, tier = choose(images, pool_version, architectures)
    if image is None:
        raise AnnexAWSError(no_match_message(images, pool_version, architectures, instance_type, region),
                            code="NoWorkerImage")
    found = dict(image)
    found["tier"] = tier
    return found
