"""Collection-level checks: the built tarball installs and its content is usable, ansible-lint
(production profile) and ansible-test sanity are clean."""
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tool  # noqa: E402

pytestmark = pytest.mark.collection

MODULES = sorted(Path(p).stem for p in glob.glob(str(REPO / "plugins/modules/*.py")))
PLAYBOOKS = sorted(Path(p).stem for p in glob.glob(str(REPO / "playbooks/*.yml")))


def run(cmd, env=None, cwd=REPO, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


def project_files():
    """Tracked and new (not ignored) files: what a commit of the work tree would hold."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if not f.startswith("collections/") and (REPO / f).exists()]


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory, ansible_env):
    """Build the collection tarball and install it into an empty collections path."""
    tmp = tmp_path_factory.mktemp("galaxy")
    rc, out = run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(tmp)],
                  env=ansible_env)
    assert rc == 0, out
    tarballs = list(tmp.glob("htcondor-annex-*.tar.gz"))
    assert len(tarballs) == 1, out
    dest = tmp / "installed"
    # --no-deps: no Galaxy server is reachable here; amazon.aws comes with the ansible package.
    env = dict(ansible_env)
    env.pop("ANSIBLE_CONFIG")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(dest)
    rc, out = run([tool("ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(dest),
                   str(tarballs[0])], env=env, cwd=tmp)
    assert rc == 0, out
    root = dest / "ansible_collections/htcondor/annex"
    assert (root / "MANIFEST.json").exists()
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{dest}{os.pathsep}{Path(sys.executable).parent.parent}"
    return tarballs[0], root, env, tmp


def test_tarball_leaves_out_tests_and_caches(installed_collection):
    tarball = installed_collection[0]
    names = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert any(n.startswith("plugins/modules/") for n in names)
    assert any(n.startswith("roles/") for n in names)
    for unwanted in ("tests/", ".venv/", ".git/", "collections/", "__pycache__", ".ci/"):
        assert not [n for n in names if unwanted in n], f"{unwanted} shipped in the tarball"


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(installed_collection, module):
    env, tmp = installed_collection[2:]
    rc, out = run([tool("ansible-doc"), f"htcondor.annex.{module}"], env=env, cwd=tmp)
    assert rc == 0, out
    for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES"):
        assert section in out, f"{module}: no {section} in ansible-doc output"


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_installed_playbooks_resolve_by_fqcn(installed_collection, playbook):
    env, tmp = installed_collection[2:]
    inventory = tmp / "hosts.yml"
    inventory.write_text("all:\n  children:\n    master:\n      hosts:\n        m1:\n")
    rc, out = run([tool("ansible-playbook"), "-i", str(inventory), "--syntax-check",
                   f"htcondor.annex.{playbook}"], env=env, cwd=tmp)
    assert rc == 0, out


def test_ansible_lint_production_profile(ansible_env):
    env = dict(ansible_env)
    rc, out = run([tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
                  env=env, timeout=900)
    assert rc == 0, out


def install_offline_pip_bootstrap():
    """ansible-test bootstraps pip in its sanity virtualenvs from a get-pip script on a host that is
    not reachable here; give it tests/collection/get_pip_offline.py under the cached name."""
    import ansible_test  # noqa: F401 (located through the installed ansible-core)
    src = Path(ansible_test.__file__).parent / "_internal/python_requirements.py"
    version = re.search(r"pip='([0-9.]+)'", src.read_text()).group(1)
    cache = Path.home() / ".ansible/test/cache" / f"get_pip_{version.replace('.', '_')}.py"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "tests/collection/get_pip_offline.py", cache)


def test_ansible_test_sanity(tmp_path, ansible_env):
    install_offline_pip_bootstrap()
    root = tmp_path / "ansible_collections/htcondor/annex"
    for rel in project_files():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest, follow_symlinks=False)
    # ansible-test only looks at files git knows about.
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = dict(ansible_env)
    env.pop("ANSIBLE_CONFIG")
    rc, out = run([tool("ansible-test"), "sanity", "--python", py, "--color", "no"],
                  env=env, cwd=root, timeout=1800)
    errors = [line for line in out.splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert rc == 0, "\n".join(errors) or out[-5000:]
