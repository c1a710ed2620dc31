# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place for HTCondor's annex protocol on AWS (what the stock worker boot script expects).

- AnnexID: the annex name; it travels in the EC2 client token (<AnnexID>_<uuid>, max 64 chars),
  the S3 key config-<AnnexID>.tar.gz, a tag value and a ClassAd string (and the name of the
  EventBridge rule condor_annex itself creates).
- The lease: S3 user metadata of config-<AnnexID>.tar.gz (its end and duration), so one PutObject
  writes tarball and lease together; the setup's one sweep rule ends annexes whose lease is over.
- The worker tarball: 00ec2-dynamic.config (sorts first, as upstream) plus
  99-htcondor-annex-lease.config (sorts last so the lease cannot be overridden by accident)
  and password_file.pl (the .pl suffix keeps HTCondor from reading it as config). The stock
  boot script untars it into /etc/condor/config.d up to HTCondor 24.10 and into /etc/condor from
  24.11 on, so every file is in the tarball twice: at the top and under config.d/. Either way
  the files land in /etc/condor/config.d (HTCondor skips the unused copies: it does not read
  subdirectories of config.d nor files directly in /etc/condor), whatever the worker AMI's version.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import getpass

import io
import json
import re
import tarfile
import time
import uuid
from datetime import datetime, timezone

ANNEX_ID_MAX = 27
# Letters, digits, '-', '.'; must start with a letter or digit. No '_': the stock boot script
# derives the AnnexID with `sed -r 's/_[^_]*//'`, which cuts the FIRST '_' run out of the client
# token, so a name with '_' would make its workers fetch another annex's tarball.
# Fits client token, S3 key, EventBridge rule name, tag and ClassAd string.
# Input patterns are applied with fullmatch: "$" would also match before a final newline, and a
# name or owner ending in "\n" splits the worker config line it is written into.
ANNEX_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
OWNER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")

ANNEX_NAME_TAG = "htcondor:AnnexName"
# The lease, as S3 user metadata of the annex's tarball (S3 stores the keys lowercase, with the
# x-amz-meta- prefix on the wire): its end (epoch seconds) and its duration (hours, a float).
LEASE_END_META = "lease-expiration"
LEASE_DURATION_META = "lease-duration"
TARBALL_PREFIX = "config-"
TARBALL_SUFFIX = ".tar.gz"
# The sweep rule of the HTCondorAnnex-LambdaFunctions stack: when it runs, and the input that tells
# the lease function to sweep the bucket (a condor_annex rule's input names one annex instead).
LEASE_RULE_SCHEDULE = "rate(5 minutes)"
LEASE_RULE_PERIOD = 300  # seconds between two runs of the sweep rule (LEASE_RULE_SCHEDULE)
SWEEP_INPUT = {"Sweep": True}
# Longest lease (hours) and idle time an annex takes: a year. Nothing in AWS is shorter (epoch
# seconds in the rule's input and the worker config, Spot Fleet ValidUntil up to year 9999);
# the bound exists because a lease is a cost guard and a longer one is a unit mistake (minutes or
# seconds given as hours), which would run workers unattended for years.
MAX_LEASE_HOURS = 8760

# The collection's worker boot agent (roles/condor_worker/files/htcondor-annex-agent), which
# replaces the stock condor-annex-ec2 boot script on images the condor_worker role builds. It
# cannot import the collection: tests/unit/.../test_protocol_copies.py checks its copies of these.
# - BOOT_AGENT_IMAGE_TAG on an AMI (value BOOT_AGENT_VERSION) says its workers run the agent: they
#   speak IMDSv2 only, so the annex module launches them with metadata_options(True, ...).
# - BUCKET_TAG on every worker names the setup's bucket: the agent needs no IAM introspection.
# - The agent tags its own instance (and no other tag key) with why it gave up booting
#   (BOOT_FAILURE_TAG) and with a Spot interruption or rebalance notice (SPOT_NOTICE_TAG, value
#   "<kind> <time>", kind "interruption-<action>" or "rebalance"); annex_info reads them back.
# - SPOT_NOTICE_ATTR is the machine attribute a worker advertises after such a notice.
# - JOB_ROLE_NAME: the role whose credentials the agent hands to jobs (annex_setup's
#   worker_policy_arns), found by name: arn:<partition>:iam::<account>:role/<JOB_ROLE_NAME>.
BOOT_AGENT_IMAGE_TAG = "htcondor-annex:boot-agent"
BOOT_AGENT_VERSION = "1"
BUCKET_TAG = "htcondor-annex:config-bucket"
BOOT_FAILURE_TAG = "htcondor-annex:boot-failure"
SPOT_NOTICE_TAG = "htcondor-annex:spot-notice"
AGENT_SELF_TAGS = (BOOT_FAILURE_TAG, SPOT_NOTICE_TAG)
SPOT_NOTICE_ATTR = "AnnexSpotNotice"
JOB_ROLE_NAME = "HTCondorAnnex-JobRole-%s"  # % region

# Pools (an instance type in a subnet) where a fleet launch failed for want of capacity are
# remembered with the setup, not on the controller: one tag of the setup's shared launch
# template (fleet.py) per pool, POOL_FAILED_TAG_PREFIX + "<type>/<subnet>" (subnet "default" without one) =
# epoch seconds of the failure. Later runs skip them for pool_retry_minutes; a launch in the pool
# removes its tag. EC2 tags: keys up to 128 characters, values up to 256, 50 tags a resource
# (EC2 User Guide, "Tag restrictions"); the longest key here is about 80.
POOL_FAILED_TAG_PREFIX = "htcondor-annex:pool-failed:"
DEFAULT_POOL_RETRY_MINUTES = 30
MAX_POOL_RETRY_MINUTES = 1440  # a day
MAX_TAGS_PER_RESOURCE = 50


def pool_failed_tag(instance_type, subnet_id):
    return "%s%s/%s" % (POOL_FAILED_TAG_PREFIX, instance_type, subnet_id or "default")


def pools_failed(tags):
    """{(instance type, subnet id or None): epoch of the failure} from a launch template's tags
    ({key: value}); malformed values are ignored."""
    found = {}
    for key, value in (tags or {}).items():
        if not key.startswith(POOL_FAILED_TAG_PREFIX) or "/" not in key[len(POOL_FAILED_TAG_PREFIX):]:
            continue
        instance_type, subnet = key[len(POOL_FAILED_TAG_PREFIX):].split("/", 1)
        try:
            found[(instance_type, None if subnet == "default" else subnet)] = int(value)
        except (TypeError, ValueError):
            continue
    return found


def metadata_options(boot_agent, allow_imdsv1=False, metadata_tags=True):
    """MetadataOptions for a worker launch (RunInstances, launch templates).

    boot_agent: the image runs the collection's agent -> IMDSv2 only (HttpTokens required), hop
    limit 1 (a job's container cannot reach instance metadata), instance tags in metadata (the
    agent reads its annex there without an API call) unless metadata_tags is False (AWS refuses
    that setting when a tag key has characters instance metadata cannot carry).
    Otherwise the image boots the stock condor-annex-ec2 script, which reads instance metadata
    with plain curl (IMDSv1): only when the user allowed it (allow_imdsv1); None means refuse."""
    if boot_agent:
        options = {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1}
        options["InstanceMetadataTags"] = "enabled" if metadata_tags else "disabled"
        return options
    if allow_imdsv1:
        return {"HttpEndpoint": "enabled", "HttpTokens": "optional", "HttpPutResponseHopLimit": 1}
    return None


STACK_BUCKET = "HTCondorAnnex-ConfigurationBucket"
STACK_LAMBDA = "HTCondorAnnex-LambdaFunctions"
STACK_PROFILE = "HTCondorAnnex-InstanceProfile"
STACK_SG = "HTCondorAnnex-SecurityGroup"
STACKS = (STACK_BUCKET, STACK_LAMBDA, STACK_PROFILE, STACK_SG)
KEY_PAIR_NAME = "HTCondorAnnex-KeyPair"

CONFIG_FILE = "00ec2-dynamic.config"
LEASE_CONFIG_FILE = "99-htcondor-annex-lease.config"
PASSWORD_FILE = "password_file.pl"
WORKER_CONFIG_DIR = "/etc/condor/config.d"

ANNEX_DEFAULT_KEYS = (
    "ANNEX_DEFAULT_AWS_REGION",
    "ANNEX_DEFAULT_S3_BUCKET",
    "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN",
    "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN",
    "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN",
    "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS",
    "ANNEX_DEFAULT_ODI_KEY_NAME",
    "ANNEX_DEFAULT_ACCESS_KEY_FILE",
    "ANNEX_DEFAULT_SECRET_KEY_FILE",
    "ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN",
)
# condor_annex reads ANNEX_DEFAULT_AWS_REGION before it knows the region, i.e. before it applies
# the region prefix (src/annex/annex.cpp); `condor_annex -setup` writes it unprefixed, and only when
# no configuration defines it yet (src/annex/GenerateConfigFile.cpp): the first region set up is
# the default. Every other key is region-prefixed, so several regions' setups coexist.
UNPREFIXED_KEYS = ("ANNEX_DEFAULT_AWS_REGION",)

# What condor_annex (HTCondor 23.x/24.0, src/annex/) cannot work without, and the setup value
# (stack output, see cloudformation.OUTPUT_KEYS) each user_config key is written from:
# - annex-setup.cpp check_setup() (`condor_annex -check-setup`) requires S3_BUCKET,
#   ODI_SECURITY_GROUP_IDS, ODI_LEASE_FUNCTION_ARN, SFR_LEASE_FUNCTION_ARN, ODI_INSTANCE_PROFILE_ARN
#   (and ACCESS_KEY_FILE/SECRET_KEY_FILE, written only when the setup used key files: the collection
#   itself also takes the boto3 credential chain, which condor_annex cannot);
# - annex.cpp reads AWS_REGION unprefixed, before anything else;
# - annex-create.cpp invokes CONNECTIVITY_FUNCTION_ARN before every launch (CheckConnectivity.cpp)
#   and GetFunction on the lease function (GetFunction.cpp): all three functions must exist.
CONDOR_ANNEX_USER_CONFIG = (
    ("ANNEX_DEFAULT_AWS_REGION", None),
    ("ANNEX_DEFAULT_S3_BUCKET", "bucket"),
    ("ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS", "security_group_id"),
    ("ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN", "odi_lease_function_arn"),
    ("ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN", "sfr_lease_function_arn"),
    ("ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN", "instance_profile_arn"),
    ("ANNEX_DEFAULT_CONNECTIVITY_FUNCTION_ARN", "connectivity_function_arn"),
)
CONDOR_ANNEX_FUNCTIONS = ("odi_lease_function_arn", "sfr_lease_function_arn", "connectivity_function_arn")


def validate_annex_id(name):
    """Error message for an AnnexID the protocol cannot carry, else None."""
    if not isinstance(name, str) or not name:
        return "annex name must be a non-empty string"
    if len(name) > ANNEX_ID_MAX:
        return ("annex name %r is %d characters long; the protocol allows at most %d "
                "(it must fit the EC2 client token <name>_<uuid> of 64 characters)" % (name, len(name), ANNEX_ID_MAX))
    if not ANNEX_ID_RE.fullmatch(name):
        return ("annex name %r has characters the protocol cannot carry: use letters, digits, '-' and '.', "
                "starting with a letter or digit ('_' is not allowed: the workers' boot script cuts the "
                "client token at the first '_')" % name)
    return None


def client_token(annex_id):
    return "%s_%s" % (annex_id, uuid.uuid4())


def annex_id_from_token(token):
    """What the stock boot script does (sed -r 's/_[^_]*//'): drop the first '_' run
    (None without '_')."""
    if not token or "_" not in token:
        return None
    return re.sub(r"_[^_]*", "", token, count=1)


def fleet_annex_id(fleet):
    """AnnexID of a DescribeSpotFleetRequests entry: its htcondor:AnnexName tag, else its client token."""
    tags = list(fleet.get("Tags") or [])
    for spec in fleet.get("SpotFleetRequestConfig", {}).get("TagSpecifications") or []:
        tags.extend(spec.get("Tags") or [])
    for tag in tags:
        if tag.get("Key") == ANNEX_NAME_TAG:
            return tag.get("Value")
    return annex_id_from_token(fleet.get("SpotFleetRequestConfig", {}).get("ClientToken"))


def tarball_key(annex_id):
    return "%s%s%s" % (TARBALL_PREFIX, annex_id, TARBALL_SUFFIX)


def annex_id_from_key(key):
    """AnnexID of a tarball key config-<AnnexID>.tar.gz, else None."""
    if key.startswith(TARBALL_PREFIX) and key.endswith(TARBALL_SUFFIX) and \
            len(key) > len(TARBALL_PREFIX) + len(TARBALL_SUFFIX):
        return key[len(TARBALL_PREFIX):-len(TARBALL_SUFFIX)]
    return None


def region_prefix(region):
    return re.sub(r"[^A-Za-z0-9_./]", "_", region)


def user_config_lines(region, values):
    """ANNEX_DEFAULT_* lines, region-prefixed but for UNPREFIXED_KEYS, in a stable order,
    skipping empty values."""
    prefix = region_prefix(region)
    lines = []
    for key in ANNEX_DEFAULT_KEYS:
        value = values.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        lines.append("%s = %s" % (key, value) if key in UNPREFIXED_KEYS else "%s.%s = %s" % (prefix, key, value))
    return lines


def parse_condor_version(text):
    """'$CondorVersion: 23.9.6 2024-08-08 BuildID: ... $' or '23.9.6' -> (23, 9, 6)."""
    if not text:
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def pool_identity(version):
    """The identity PASSWORD authentication maps to: condor_pool@* before 24.0, condor@password since."""
    if version is not None and tuple(version)[:1] < (24,):
        return "condor_pool@*"
    return "condor@password"


def lease_is_spent(expiration_epoch, now=None):
    """True when a lease end is past or comes before the lease rule's next run could matter
    (within LEASE_RULE_PERIOD): workers launched under it would be ended at once."""
    now = time.time() if now is None else now
    return expiration_epoch is None or expiration_epoch <= now + LEASE_RULE_PERIOD


def lease_expiration(duration_hours, now=None):
    now = time.time() if now is None else now
    return int(now + float(duration_hours) * 3600)


def iso8601(epoch):
    return datetime.utcfromtimestamp(int(epoch)).strftime("%Y-%m-%dT%H:%M:%SZ")


# An absolute lease end as users write it (condor_annex's --expiry '2015-12-18 23:59') and as
# iso8601() prints it: seconds optional, ' ' or 'T' between date and time, an optional 'Z'. Always UTC.
UTC_DATETIME_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_utc_datetime(text):
    """Epoch seconds (int) of a UTC date-time like '2026-12-18 23:59' or '2026-12-18T23:59:00Z';
    raises ValueError for anything else."""
    stripped = str(text).strip()
    if stripped.endswith("Z"):
        stripped = stripped[:-1]
    for fmt in UTC_DATETIME_FORMATS:
        try:
            return int(datetime.strptime(stripped, fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            continue
    raise ValueError("%r is not a UTC date-time like '2026-12-18 23:59' or '2026-12-18T23:59:00Z'" % text)


def lease_input(annex_id, bucket, expiration_epoch):
    """The input condor_annex gives the lease rule it creates per annex (LeaseExpiration in epoch
    seconds). The collection creates no such rule; the lease function still serves them."""
    return json.dumps({"AnnexID": annex_id, "S3BucketName": bucket,
                       "LeaseExpiration": str(int(expiration_epoch))}, sort_keys=True)


def sweep_input():
    """The sweep rule's constant target input."""
    return json.dumps(SWEEP_INPUT, sort_keys=True)


def lease_metadata(duration_hours, expiration_epoch):
    """The tarball's S3 user metadata that holds the lease."""
    return {LEASE_END_META: str(int(expiration_epoch)), LEASE_DURATION_META: repr(float(duration_hours))}


def parse_lease_metadata(metadata):
    """HeadObject's Metadata -> (duration_hours, expiration_epoch), or (None, None) without a lease."""
    metadata = dict((k.lower(), v) for k, v in (metadata or {}).items())
    try:
        end = int(float(metadata[LEASE_END_META]))
    except (KeyError, TypeError, ValueError):
        return None, None
    try:
        duration = float(metadata.get(LEASE_DURATION_META))
    except (TypeError, ValueError):
        duration = None
    return duration, end


def render_worker_config(annex_id, collector_host, version, idle_hours, owners=None):
    """The worker's 00ec2-dynamic.config, for the pool's HTCondor version."""
    identity = pool_identity(version)
    if owners:
        start = 'START = (MayUseAWS == TRUE) && stringListMember(Owner, "%s")' % ",".join(owners)
    else:
        start = "START = MayUseAWS == TRUE"
    version_text = ".".join(str(v) for v in version) if version else "unknown (rendered for >= 24)"
    lines = [
        "# Written by htcondor.annex for annex %s (pool HTCondor %s). Do not edit on the worker." % (
            annex_id, version_text),
        "LOCAL_HOSTS = $(FULL_HOSTNAME) $(IP_ADDRESS) 127.0.0.1",
        "COLLECTOR_HOST = %s" % collector_host,
        "CONDOR_HOST = %s" % collector_host.split(":")[0],
        "",
        "SEC_DEFAULT_AUTHENTICATION = REQUIRED",
        "SEC_DEFAULT_AUTHENTICATION_METHODS = FS, PASSWORD",
        "SEC_DEFAULT_INTEGRITY = REQUIRED",
        "SEC_DEFAULT_ENCRYPTION = REQUIRED",
        "SEC_PASSWORD_FILE = %s/%s" % (WORKER_CONFIG_DIR, PASSWORD_FILE),
        "ANNEX_POOL_IDENTITY = %s" % identity,
        "ALLOW_WRITE = $(ANNEX_POOL_IDENTITY)/* $(LOCAL_HOSTS)",
        "ALLOW_DAEMON = $(ANNEX_POOL_IDENTITY)/* $(LOCAL_HOSTS)",
        "ALLOW_NEGOTIATOR = $(ANNEX_POOL_IDENTITY)/*",
        "ALLOW_ADMINISTRATOR = $(ANNEX_POOL_IDENTITY)/* $(LOCAL_HOSTS)",
        "",
        'AnnexName = "%s"' % annex_id,
        "IsAnnex = TRUE",
        "STARTD_ATTRS = $(STARTD_ATTRS) AnnexName IsAnnex",
        "MASTER_ATTRS = $(MASTER_ATTRS) AnnexName IsAnnex",
        "",
        "STARTD_NOCLAIM_SHUTDOWN = %d" % int(round(float(idle_hours) * 3600)),
        start,
        "",
    ]
    return "\n".join(lines)


def render_lease_config(annex_id, lease_end_epoch):
    """Worker-side lease: the startd exits at lease end (the stock 50ec2.config then stops the
    master, whose shutdown script halts the machine, which terminates); the master itself
    exits fast ten minutes later in case the startd hangs."""
    return "\n".join([
        "# Written by htcondor.annex: worker-side lease of annex %s, ends %s." % (annex_id, iso8601(lease_end_epoch)),
        "ANNEX_LEASE_END = %d" % int(lease_end_epoch),
        "STARTD.DAEMON_SHUTDOWN = time() > $(ANNEX_LEASE_END)",
        "MASTER.DAEMON_SHUTDOWN_FAST = time() > ($(ANNEX_LEASE_END) + 600)",
        "",
    ])


def build_tarball(config_text, lease_text, password_bytes, extra_files=None):
    """The config-<AnnexID>.tar.gz bytes, built in memory. extra_files: [(name, bytes)]."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        entries = [(CONFIG_FILE, config_text.encode("utf-8"), 0o644)]
        for name, data in extra_files or []:
            entries.append((name, data, 0o644))
        entries.append((LEASE_CONFIG_FILE, lease_text.encode("utf-8"), 0o644))
        entries.append((PASSWORD_FILE, password_bytes, 0o600))
        for name, data, mode in entries + [("config.d/" + n, d, m) for n, d, m in entries]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = now
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def extra_file_name(index, path):
    """Name of a user-supplied worker config file in the tarball (sorts between ours)."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", path.rsplit("/", 1)[-1])
    if base.endswith(".pl"):
        base = base + ".config"
    return "50-user-%02d-%s" % (index, base)


def worker_owners(owners, no_owner):
    """The users whose jobs an annex's workers START: the given owners, else the user running the
    module (condor_annex's default); None with no_owner (any user)."""
    if no_owner:
        return None
    return owners or [getpass.getuser()]
