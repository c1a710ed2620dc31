"""Unit tests (ansible-test layout: plugins/modules, plugins/module_utils, roles) share
annex_helpers.py, which lives here: make it importable from every subfolder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
