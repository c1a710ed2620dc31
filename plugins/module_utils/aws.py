# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place where htcondor.annex talks to AWS.

Client factory (region, credentials, endpoint override, botocore retry mode, user agent),
error translation into messages a non-expert can act on, paginator/waiter helpers and tags.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import re
import unicodedata

try:
    # botocore only: the modules make clients and nothing else, and boto3 (installed with it, and
    # what amazon.aws requires) adds 0.02 s of imports and session set-up to every run
    import botocore.session
    from botocore.loaders import create_loader
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        WaiterError,
        EndpointConnectionError,
    )
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without boto3
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc

COLLECTION_VERSION = "0.1.0"
USER_AGENT = "htcondor.annex/%s" % COLLECTION_VERSION
DEFAULT_REGION = "us-east-1"

MANAGED_BY_KEY = "htcondor-annex:managed-by"
MANAGED_BY_VALUE = "htcondor.annex"

# Shared argument spec of every annex module (documented in doc fragment htcondor.annex.aws).
AWS_ARGUMENT_SPEC = dict(
    region=dict(type="str", aliases=["aws_region"]),
    access_key_file=dict(type="path"),
    secret_key_file=dict(type="path", no_log=False),
    profile=dict(type="str", aliases=["aws_profile"]),
    endpoint_url=dict(type="str"),
    retry_mode=dict(type="str", default="standard", choices=["standard", "adaptive"]),
    max_attempts=dict(type="int", default=10),
)
AWS_REQUIRED_TOGETHER = [["access_key_file", "secret_key_file"]]
AWS_MUTUALLY_EXCLUSIVE = [["profile", "access_key_file"]]

# Error codes that mean "these credentials are not valid" (as opposed to "not allowed").
_AUTH_CODES = frozenset([
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "InvalidAccessKeyId", "IncompleteSignature", "ExpiredToken", "ExpiredTokenException",
    "InvalidToken", "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
])
_DENIED_CODES = frozenset([
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden",
    "AuthorizationError", "UnauthorizedAccess",
])
_THROTTLE_CODES = frozenset([
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "SlowDown", "RequestThrottled", "ProvisionedThroughputExceededException",
])


class AnnexAWSError(Exception):
    """An AWS failure already translated into a message for the user."""

    def __init__(self, message, code=None, exception=None):
        super(AnnexAWSError, self).__init__(message)
        self.message = message
        self.code = code
        self.exception = exception


_DATA_LOADER = []


def data_loader():
    """botocore's data loader, one per module process and shared with the AWSConnection's session:
    the region check reads botocore's endpoints data through it without building a session of its
    own, and the clients created later find that data already parsed in its cache."""
    if not _DATA_LOADER:
        _DATA_LOADER.append(create_loader())
        # Dropped before the interpreter's own teardown: a loader still referenced then keeps the
        # parsed endpoints and service models (about 55,000 objects) alive through the final
        # garbage collections, which walk them all (0.08 s per module run); dropped by atexit, they
        # are freed at once by reference counting.
        atexit.register(_release_data_loader)
    return _DATA_LOADER[0]


def _release_data_loader():
    del _DATA_LOADER[:]


def known_regions():
    """Every region botocore knows (all partitions of its endpoints data)."""
    regions = set()
    for partition in data_loader().load_data("endpoints").get("partitions", []):
        regions.update(partition.get("regions", {}))
    return regions


def partition_of(region):
    """The AWS partition of a region (aws, aws-cn, aws-us-gov, ...) from botocore's endpoints data:
    the ARNs of resources there begin with arn:<partition>:."""
    for partition in data_loader().load_data("endpoints").get("partitions", []):
        if region in partition.get("regions", {}) or re.match(partition.get("regionRegex") or r"$^", region or ""):
            return partition["partition"]
    return "aws"


def resolve_region(region):
    """Option, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def validate_region(region):
    """Return an error message for an unknown region, else None (no network call)."""
    if region not in known_regions():
        return ("unknown region %r: not an AWS region botocore knows (e.g. us-east-1, eu-west-1). "
                "Set the region option or AWS_REGION." % region)
    return None


def _read_key_file(path, what):
    try:
        with open(path, "r") as handle:
            value = handle.read().strip()
    except (IOError, OSError) as exc:
        raise AnnexAWSError("cannot read the AWS %s file %s: %s" % (what, path, exc.strerror or exc))
    if not value:
        raise AnnexAWSError("the AWS %s file %s is empty" % (what, path))
    return value


# Requests whose IAM action has another name (what a denial message must name).
_IAM_ACTION_OF = {
    ("s3", "HeadObject"): "GetObject",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjectVersions"): "ListBucketVersions",
}


def iam_action(client_or_service, operation):
    service = client_or_service if isinstance(client_or_service, str) else \
        client_or_service.meta.service_model.service_name
    # the IAM action prefix is the botocore service name for every service this collection calls
    return "%s:%s" % (service, _IAM_ACTION_OF.get((service, operation), operation))


def translate_error(exc, action=None):
    """Turn a botocore exception into an AnnexAWSError with a message users can act on."""
    if isinstance(exc, AnnexAWSError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AnnexAWSError(
            "No AWS credentials found: give access_key_file/secret_key_file (the seed's "
            "~/.condor/publicKeyFile and privateKeyFile), a profile, AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY in the environment, or run on an instance with a role.",
            code="NoCredentials", exception=exc)
    if isinstance(exc, ProfileNotFound):
        return AnnexAWSError("AWS profile not found: %s" % exc, code="ProfileNotFound", exception=exc)
    if isinstance(exc, NoRegionError):
        return AnnexAWSError("no AWS region configured: set the region option", code="NoRegion",
                             exception=exc)
    if isinstance(exc, EndpointConnectionError):
        return AnnexAWSError("cannot reach the AWS endpoint: %s" % exc, code="EndpointConnection",
                             exception=exc)
    if isinstance(exc, WaiterError):
        return AnnexAWSError("gave up waiting for %s: %s" % (action or "a resource", exc),
                             code="WaiterError", exception=exc)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        message = err.get("Message", "")
        operation = getattr(exc, "operation_name", None)
        what = action or operation or "the request"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "403" or (status == 403 and code in ("", "Unknown")):
            code, message = _bare_403(message)
        if code in _AUTH_CODES:
            return AnnexAWSError(
                "AWS rejected the credentials (%s) during %s: %s. Check the access key id and "
                "secret key (key files, profile or environment) and the region." % (code, what, message),
                code=code, exception=exc)
        if code in _DENIED_CODES:
            return AnnexAWSError(
                "AWS denied %s (%s): the credentials lack the IAM permission for it. %s"
                % (what, code, message), code=code, exception=exc)
        if code in _THROTTLE_CODES:
            return AnnexAWSError(
                "AWS kept throttling %s (%s) after all retries; try again later or raise "
                "max_attempts / use retry_mode=adaptive." % (what, code), code=code, exception=exc)
        return AnnexAWSError("AWS error during %s: %s: %s" % (what, code, message), code=code, exception=exc)
    if isinstance(exc, BotoCoreError):
        return AnnexAWSError("AWS client error during %s: %s" % (action or "the request", exc),
                             code=type(exc).__name__, exception=exc)
    return AnnexAWSError("%s failed: %s" % (action or "AWS request", exc), exception=exc)


_XML_CODE = re.compile(r"<Code>\s*([^<]*?)\s*</Code>")
_XML_MESSAGE = re.compile(r"<Message>\s*([^<]*?)\s*</Message>")


def _bare_403(body):
    """(code, message) of an HTTP 403 whose body botocore could not parse (botocore then reports
    the code "403" and the raw body, e.g. an XML error answering a JSON-protocol service such as
    EventBridge). The code and message inside the body when there is one, else AccessDenied:
    a 403 means the request was refused."""
    body = body or ""
    code = _XML_CODE.search(body)
    text = _XML_MESSAGE.search(body)
    if text:
        message = text.group(1)
    elif body.lstrip().startswith("<") or body.strip() == "Forbidden":
        message = ""  # markup without a message: nothing a user can read
    else:
        message = body.strip()[:500]
    message = ("%s (HTTP 403)" % message).strip() if message else "HTTP 403 Forbidden"
    code = code.group(1) if code else ""
    if code in _AUTH_CODES or code in _DENIED_CODES:
        return code, message
    return "AccessDenied", ("%s: %s" % (code, message)) if code else message


def error_code(exc):
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    if isinstance(exc, AnnexAWSError):
        return exc.code
    return None


def is_not_found(exc, *codes, **kwargs):
    """True when exc (an AnnexAWSError or ClientError) carries one of the "does not exist" codes;
    message="..." also requires that text in the message (CloudFormation answers a missing stack
    with the generic ValidationError)."""
    message = kwargs.get("message")
    if error_code(exc) not in codes:
        return False
    return message is None or message in (getattr(exc, "message", None) or str(exc))


def describe_or_none(fn, *codes, **kwargs):
    """fn() (a call that describes one thing), or None when AWS answers that it does not exist.
    codes / message as for is_not_found."""
    try:
        return fn()
    except AnnexAWSError as exc:
        if is_not_found(exc, *codes, **kwargs):
            return None
        raise


class AWSConnection:
    """Creates clients from one botocore session with the collection's config."""

    def __init__(self, region=None, access_key_file=None, secret_key_file=None, profile=None,
                 endpoint_url=None, retry_mode="standard", max_attempts=10):
        self.region = resolve_region(region)
        self.endpoint_url = endpoint_url
        self.config = Config(
            region_name=self.region,
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            user_agent_extra=USER_AGENT,
        )
        self.access_key_file = access_key_file
        self.secret_key_file = secret_key_file
        self.session = botocore.session.get_session()
        self.session.lazy_register_component("data_loader", data_loader)
        if profile:
            self.session.set_config_variable("profile", profile)
        if access_key_file:
            self.session.set_credentials(_read_key_file(access_key_file, "access key"),
                                         _read_key_file(secret_key_file, "secret key"))
        self.session.set_config_variable("region", self.region)
        try:
            # an unknown profile fails here, with its message, not as a traceback at the first client
            self.session.get_scoped_config()
        except ProfileNotFound as exc:
            raise translate_error(exc)
        self._clients = {}

    @classmethod
    def from_params(cls, params):
        return cls(region=params.get("region"), access_key_file=params.get("access_key_file"),
                   secret_key_file=params.get("secret_key_file"), profile=params.get("profile"),
                   endpoint_url=params.get("endpoint_url"), retry_mode=params.get("retry_mode") or "standard",
                   max_attempts=params.get("max_attempts") or 10)

    def client(self, service, region=None):
        """One client a service (and region: the Price List API answers in one region only)."""
        key = (service, region)
        if key not in self._clients:
            kwargs = dict(config=self.config)
            if region:
                kwargs["region_name"] = region
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            self._clients[key] = self.session.create_client(service, **kwargs)
        return self._clients[key]


def call(client, operation, **kwargs):
    """Call client.<operation>(**kwargs), translating errors (retries are botocore's)."""
    method = getattr(client, _snake(operation))
    try:
        return method(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, iam_action(client, operation))


def paginate(client, operation, result_key, **kwargs):
    """All items of result_key over every page of a paginated operation."""
    items = []
    try:
        for page in client.get_paginator(_snake(operation)).paginate(**kwargs):
            items.extend(page.get(result_key, []))
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, iam_action(client, operation))
    return items


def wait(client, waiter_name, timeout, delay=5, action=None, **kwargs):
    """Run a botocore waiter bounded by timeout seconds."""
    delay = max(1, int(delay))
    attempts = max(1, int(timeout) // delay)
    try:
        client.get_waiter(waiter_name).wait(WaiterConfig={"Delay": delay, "MaxAttempts": attempts}, **kwargs)
    except WaiterError as exc:
        reason = getattr(exc, "kwargs", {}).get("reason", exc)
        raise AnnexAWSError("gave up waiting for %s after %ss: %s" % (action or waiter_name, timeout, reason),
                            code="WaiterError", exception=exc)
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, action or waiter_name)


def _snake(operation):
    if "_" in operation or operation.islower():
        return operation
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index and (not operation[index - 1].isupper() or
                                         (index + 1 < len(operation) and operation[index + 1].islower())):
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def tag_list(tags):
    """{'k': 'v'} -> [{'Key': 'k', 'Value': 'v'}], sorted for stable comparisons."""
    return [{"Key": str(k), "Value": str(v)} for k, v in sorted((tags or {}).items())]


def tag_dict(tag_list_):
    return dict((t["Key"], t["Value"]) for t in (tag_list_ or []))


def managed_tags(extra=None):
    tags = dict(extra or {})
    tags[MANAGED_BY_KEY] = MANAGED_BY_VALUE
    return tags


# What IAM and EC2 (and so every resource the stacks' tags reach) accept in tag keys and values:
# Unicode letters, digits and separators (spaces) and _ . : / = + - @ ; and at most 50 tags a
# resource (the "aws:" tags CloudFormation adds do not count).
TAG_LIMIT = 50
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


def _bad_tag_character(text):
    """The first character IAM/EC2 refuse in a tag key or value, else None."""
    for char in text:
        if char in _TAG_PUNCTUATION or char.isalnum() or unicodedata.category(char)[0] in ("L", "N", "Z"):
            continue
        return char
    return None


def validate_tags(tags, added=None):
    """Error message for tags AWS would reject, else None (before any call).

    added: the tags the collection adds to the same resources (they count towards the limit)."""
    tags = tags or {}
    for key, value in tags.items():
        key, value = str(key), str(value)
        if not key or len(key) > 128 or key.lower().startswith("aws:"):
            return "invalid tag key %r: 1..128 characters, not starting with 'aws:'" % key
        if len(value) > 256:
            return "tag %r: value longer than 256 characters" % key
        for what, text in (("key", key), ("value", value)):
            bad = _bad_tag_character(text)
            if bad is not None:
                return ("tag %r: the %s contains %r; AWS accepts only letters, digits, spaces and "
                        "_ . : / = + - @ in tags (IAM refuses the rest, and the stacks' tags reach IAM roles)"
                        % (key, what, bad))
    given = set(str(k) for k in tags)
    added = set(added or ())
    total = len(given | added)
    if total > TAG_LIMIT:
        return ("%d tags: AWS allows at most %d per resource, and htcondor.annex adds %d of its own (%s); "
                "give at most %d" % (total, TAG_LIMIT, len(added), ", ".join(sorted(added)),
                                     TAG_LIMIT - len(added - given)))
    return None


def missing_boto3_msg():
    return "boto3 and botocore are required on the host running this module (pip install boto3): %s" % (
        BOTO3_IMPORT_ERROR,)
