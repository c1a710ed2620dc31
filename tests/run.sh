#!/usr/bin/env bash
# The test command: installs what is missing (scripts/bootstrap.sh), builds or reuses the
# container base images, then runs the whole suite with pytest. Extra arguments go to pytest,
# e.g. `bash tests/run.sh -m "not molecule"` or `bash tests/run.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash sandbox/images/build.sh
# shellcheck disable=SC1091
. .venv/bin/activate
exec python -m pytest "$@"
