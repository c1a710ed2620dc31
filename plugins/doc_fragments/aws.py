# -*- coding: utf-8 -*-
# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Common AWS options of the htcondor.annex modules (module_utils/aws.py AWS_ARGUMENT_SPEC),
    # and their shared attribute: every annex module supports check mode fully.
    DOCUMENTATION = r'''
options:
  region:
    description:
      - AWS region to work in.
      - Defaults to E(AWS_REGION), then E(AWS_DEFAULT_REGION), then C(us-east-1).
      - Checked against the regions botocore knows before any AWS call.
    type: str
    aliases: [aws_region]
  access_key_file:
    description:
      - File holding the AWS access key id (the seed's C(~/.condor/publicKeyFile)).
      - Without it the standard boto3 credential chain is used (environment, O(profile),
        shared files, instance profile).
    type: path
  secret_key_file:
    description:
      - File holding the AWS secret access key (the seed's C(~/.condor/privateKeyFile)).
      - The key itself is never logged or returned.
    type: path
  profile:
    description:
      - Named profile from the AWS shared credentials/config files.
    type: str
    aliases: [aws_profile]
  endpoint_url:
    description:
      - Override the AWS endpoint for every service (for example a moto server in tests).
      - Without it botocore honours E(AWS_ENDPOINT_URL) and E(AWS_ENDPOINT_URL_<SERVICE>).
    type: str
  retry_mode:
    description:
      - botocore retry mode; both retry throttling (C(Throttling), C(RequestLimitExceeded))
        and transient errors with exponential backoff. C(adaptive) also rate-limits the client.
    type: str
    default: standard
    choices: [standard, adaptive]
  max_attempts:
    description:
      - Maximum attempts per AWS request (first try included).
    type: int
    default: 10
requirements:
  - python >= 3.9
  - boto3 >= 1.34
  - botocore >= 1.34
notes:
  - Missing or rejected credentials fail with a clear message before anything is created.
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
'''
