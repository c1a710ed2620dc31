# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The variable tables of the role READMEs are generated from meta/argument_specs.yml (the one
documentation of a role's variables) and must not drift from it; defaults/main.yml defines
every documented variable with the documented default.

Regenerate the tables:  python tests/unit/roles/test_role_readmes.py --write
"""
import re
import sys
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"
# READMEs that carry a generated block (the others link to ansible-doc).
GENERATED = ("annex",)
BEGIN = "<!-- BEGIN generated: variables"
END = "<!-- END generated: variables -->"
SPEC_ROLES = sorted(p.parent.parent.name for p in ROLES.glob("*/meta/argument_specs.yml"))


def specs(role):
    return yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def _cell(text):
    text = " ".join(text) if isinstance(text, list) else str(text)
    text = re.sub(r"[OCMP]\(([^)]*)\)", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def render(role):
    """Markdown: per entry point, a table of its variables (name, type, default, meaning)."""
    lines = []
    for entry, spec in specs(role).items():
        lines += ["", "### Entry point `%s`" % entry, "", _cell(spec.get("short_description", "")), "",
                  "| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, opt in sorted(spec.get("options", {}).items()):
            default = "" if "default" not in opt else "`%s`" % (
                yaml.safe_dump(opt["default"], default_flow_style=True).strip().replace("\n...", ""))
            kind = opt.get("type", "str") + ("(%s)" % opt["elements"] if opt.get("elements") else "")
            lines.append("| `%s` | %s | %s | %s |" % (name, kind, _cell(default) if default else
                                                      ("required" if opt.get("required") else ""),
                                                      _cell(opt.get("description", ""))))
    return "\n".join(lines) + "\n"


def block(readme_text):
    start = readme_text.index(BEGIN)
    start = readme_text.index("\n", start) + 1
    return start, readme_text.index(END)


@pytest.mark.parametrize("role", GENERATED)
def test_readme_variables_are_generated_from_the_specs(role):
    text = (ROLES / role / "README.md").read_text()
    start, end = block(text)
    assert text[start:end] == render(role), (
        "roles/%s/README.md is out of date: python tests/unit/roles/test_role_readmes.py --write" % role)


@pytest.mark.parametrize("role", SPEC_ROLES)
def test_defaults_match_the_specs(role):
    defaults_file = ROLES / role / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    for entry, spec in specs(role).items():
        for name, opt in spec.get("options", {}).items():
            if opt.get("required"):
                continue
            assert name in defaults, "%s: %s (entry point %s) has no default in defaults/main.yml" % (role, name, entry)
            if "default" in opt and not str(opt["default"]).startswith("{{"):
                assert defaults[name] == opt["default"], (role, entry, name, defaults[name], opt["default"])


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    for generated in GENERATED:
        path = ROLES / generated / "README.md"
        old = path.read_text()
        s, e = block(old)
        path.write_text(old[:s] + render(generated) + old[e:])
        print("wrote", path)
