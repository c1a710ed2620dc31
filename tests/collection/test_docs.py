# Copyright: htcondor.annex contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The documentation holds together: the README stays short, every relative link in it and in
docs/ leads to a file (and heading) of the repository, nothing points outside the repository,
and each role README's example playbook passes ansible-playbook --syntax-check."""
import re
import subprocess

import pytest

from conftest import REPO, tool  # noqa: E402

pytestmark = pytest.mark.collection

README_MAX_BYTES = 8192
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
ROLE_READMES = sorted((REPO / "roles").glob("*/README.md"))
# Inline links [text](target); images and reference-style links are not used in these pages.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
EXAMPLE = re.compile(r"^## Example playbook\n.*?^```yaml\n(.*?)^```", re.M | re.S)
# A folder beside the repository that users of it do not have (built, not written, so that
# this file does not match its own search).
OUTSIDE = "/".join(["..", "shared", ""])
SCANNED = ["README.md", "docs", "roles", "plugins", "playbooks", "tests"]


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page):
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def test_readme_is_at_most_8_kb():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; keep it at most {README_MAX_BYTES}"


@pytest.mark.parametrize("page", PAGES + ROLE_READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked here (no internet)
        path, anchor = target.split("#", 1) if "#" in target else (target, "")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or REPO.resolve() not in [dest, *dest.parents]:
            broken.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_nothing_refers_outside_the_repository():
    found = []
    for name in SCANNED:
        root = REPO / name
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".gz"):
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            found += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if OUTSIDE in line]
    assert not found, "references to a folder outside the repository: " + ", ".join(found)


def test_role_readme_example_playbooks_pass_syntax_check(tmp_path, ansible_env):
    plays = []
    for readme in ROLE_READMES:
        match = EXAMPLE.search(readme.read_text())
        assert match, f"{readme.relative_to(REPO)} has no '## Example playbook' with a yaml block"
        plays.append(f"# {readme.parent.name}\n" + match.group(1).replace("---\n", "", 1))
    playbook = tmp_path / "role_examples.yml"
    playbook.write_text("---\n" + "\n".join(plays))
    # One ansible-playbook process for every example: the roles resolve through ansible.cfg.
    proc = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook)],
                          cwd=REPO, env=ansible_env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
