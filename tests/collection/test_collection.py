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
import yaml

from conftest import REPO, tool  # noqa: E402

pytestmark = pytest.mark.collection

MODULES = sorted(Path(p).stem for p in glob.glob(str(REPO / "plugins/modules/*.py")))
# Only the top-level files of playbooks/ are playbooks (playbooks/tasks/ holds task files).
PLAYBOOKS = sorted(Path(p).stem for p in glob.glob(str(REPO / "playbooks/*.yml")))
# (role, entry point) for every entry point a role documents in meta/argument_specs.yml.
ROLE_ENTRY_POINTS = sorted(
    (Path(spec).parents[1].name, entry)
    for spec in glob.glob(str(REPO / "roles/*/meta/argument_specs.yml"))
    for entry in yaml.safe_load(Path(spec).read_text())["argument_specs"])
# The repository-root entry points (not in the collection): they add the sandbox around it.
ENTRY_POINTS = sorted(Path(p).name for p in glob.glob(str(REPO / "*.yml"))
                      if Path(p).name not in ("galaxy.yml",))
# What the repository holds for its tests, benchmarks and the local sandbox only.
NOT_SHIPPED = ("sandbox/", "tests/", "molecule/", "benchmarks/", "scripts/", "inventories/sandbox",
               "inventories/moto", ".ci/", "collections/")
# Shipped folders whose content must not mention the sandbox (role READMEs may say how they
# are tested).
NO_SANDBOX_MENTION = ("playbooks", "plugins", "roles", "meta")


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


def test_tarball_holds_no_sandbox_or_test_file(installed_collection):
    """The sandbox and the test rigs are the repository's, not the collection's: none of their
    files ships, and no shipped playbook, plugin or role refers to the sandbox."""
    root = installed_collection[1]
    shipped = [p.relative_to(root).as_posix() for p in root.rglob("*")]
    for unwanted in NOT_SHIPPED:
        assert not [n for n in shipped if n == unwanted.rstrip("/") or n.startswith(unwanted)], \
            f"{unwanted} shipped in the tarball"
    for name in ("site.yml", "teardown.yml", "annex_start.yml", "annex_autoscale.yml", "build_worker_ami.yml", "ansible.cfg"):
        assert not (root / name).exists(), f"the repository's {name} shipped in the tarball"
    assert (root / "playbooks/site.yml").exists()
    mentions = [p.relative_to(root).as_posix()
                for folder in NO_SANDBOX_MENTION for p in (root / folder).rglob("*")
                if p.is_file() and p.suffix != ".md" and "sandbox" in p.read_text(errors="replace").lower()]
    assert not mentions, f"shipped files that mention the sandbox: {mentions}"


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(installed_collection, module):
    env, tmp = installed_collection[2:]
    rc, out = run([tool("ansible-doc"), f"htcondor.annex.{module}"], env=env, cwd=tmp)
    assert rc == 0, out
    for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES"):
        assert section in out, f"{module}: no {section} in ansible-doc output"


@pytest.mark.parametrize("role,entry", ROLE_ENTRY_POINTS)
def test_ansible_doc_renders_every_role_entry_point(installed_collection, role, entry):
    root, env, tmp = installed_collection[1:]
    rc, out = run([tool("ansible-doc"), "-t", "role", f"htcondor.annex.{role}", "-e", entry],
                  env=env, cwd=tmp)
    # ansible-doc exits 0 with no output for an unknown role or entry point: check what it shows.
    assert rc == 0, out
    assert re.search(r"ROLE: \W*htcondor\.annex\.%s\W* \(%s\)" % (role, re.escape(str(root))), out), out
    assert re.search(r"ENTRY POINT: \W*%s\W* - \S" % re.escape(entry), out), out


def test_every_installed_playbook_is_syntax_checked(installed_collection):
    """The playbooks the tarball ships are the ones test_installed_playbooks_resolve_by_fqcn
    checks (its list comes from the checkout, before the tarball exists)."""
    root = installed_collection[1]
    assert sorted(p.stem for p in (root / "playbooks").glob("*.yml")) == PLAYBOOKS


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_installed_playbooks_resolve_by_fqcn(installed_collection, playbook):
    """Each shipped playbook passes --syntax-check from the installed tarball alone (no
    ansible.cfg, run outside the checkout: roles and imports resolve in the installed copy)."""
    env, tmp = installed_collection[2:]
    inventory = tmp / "hosts.yml"
    inventory.write_text("all:\n  children:\n    master:\n      hosts:\n        m1:\n")
    rc, out = run([tool("ansible-playbook"), "-i", str(inventory), "--syntax-check",
                   f"htcondor.annex.{playbook}"], env=env, cwd=tmp)
    assert rc == 0, out


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_repository_entry_points_pass_syntax_check(ansible_env, entry_point):
    """The README's commands run these from the repository root with its default inventory, the
    sandbox (site.yml and teardown.yml import the sandbox playbooks around the collection's)."""
    rc, out = run([tool("ansible-playbook"), "--syntax-check", entry_point], env=ansible_env)
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
