"""Offline stand-in for get-pip.py, used only to bootstrap ansible-test's sanity virtualenvs.

ansible-test downloads a get-pip script from a host that is not reachable here (only PyPI is).
This script installs the pip wheel bundled with CPython (ensurepip), then lets that pip install the
exact packages ansible-test asked for from PyPI. ansible-test runs it through its quiet_pip wrapper
with the same arguments it gives get-pip.py.
"""
import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY_OPTIONS]
# ansible-test strips the environment (PIP_CERT, SSL_CERT_FILE): use the system CA bundle.
if os.path.exists(SYSTEM_CA_BUNDLE):
    args = ["--cert", SYSTEM_CA_BUNDLE, *args]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
