# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pool password format, writer and module (no cloud, no HTCondor needed).

The known vector comes from real condor_store_cred 23.9.6 (see docs/annex-protocol.md):
``echo -n s3cret | condor_store_cred add -c -i - -f F`` writes ``ad 9e dd 9d bb d9``.
The molecule scenarios check byte-identity against condor_store_cred on 23.9.6 and 25.14.1.
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.htcondor.annex.plugins.module_utils import pool_password as pp  # noqa: E402

MODULE = ROOT / "plugins" / "modules" / "pool_password.py"


def run_module(args, check_mode=False, diff=False):
    payload = dict(args)
    payload["_ansible_check_mode"] = check_mode
    payload["_ansible_diff"] = diff
    env = dict(os.environ, PYTHONPATH=str(ROOT / "collections"))
    proc = subprocess.run(
        [sys.executable, str(MODULE)],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": payload}),
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    out = json.loads(proc.stdout)
    return out, proc


def test_known_vector():
    assert pp.encode("s3cret") == bytes.fromhex("ad9edd9dbbd9")


def test_key_repeats_without_padding():
    data = pp.encode("abcdefghi")
    assert len(data) == 9
    assert data[:4] == bytes(b ^ k for b, k in zip(b"abcd", pp.XOR_KEY))
    assert data[4:8] == bytes(b ^ k for b, k in zip(b"efgh", pp.XOR_KEY))
    assert data[8] == ord("i") ^ 0xDE
    assert pp.decode(data) == b"abcdefghi"


def test_utf8_password_roundtrip():
    assert pp.decode(pp.encode("pässwörd")) == "pässwörd".encode("utf-8")


@pytest.mark.parametrize("bad", ["", "a\x00b", None, "s3cret\n", "s3\ncret", "s3cret\r"])
def test_rejects_unstorable_passwords(bad):
    with pytest.raises(pp.PoolPasswordError):
        pp.encode(bad)


def test_apply_writes_then_is_idempotent(tmp_path):
    f = tmp_path / "POOL"
    changed, diff = pp.apply(str(f), "s3cret", uid=os.getuid(), gid=os.getgid())
    assert changed
    assert f.read_bytes() == bytes.fromhex("ad9edd9dbbd9")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert "s3cret" not in json.dumps(diff)
    changed = pp.apply(str(f), "s3cret", uid=os.getuid(), gid=os.getgid())[0]
    assert not changed
    # a different password rewrites the file, leaving no temporary files behind
    changed = pp.apply(str(f), "other", uid=os.getuid(), gid=os.getgid())[0]
    assert changed
    assert pp.decode(f.read_bytes()) == b"other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["POOL"]


def test_apply_fixes_mode_only(tmp_path):
    f = tmp_path / "POOL"
    f.write_bytes(pp.encode("s3cret"))
    f.chmod(0o644)
    todo = pp.plan(str(f), "s3cret")
    assert todo["attributes"] and not todo["write"]
    changed = pp.apply(str(f), "s3cret")[0]
    assert changed
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_check_mode_touches_nothing(tmp_path):
    f = tmp_path / "POOL"
    changed = pp.apply(str(f), "s3cret", check_mode=True)[0]
    assert changed and not f.exists()
    f.write_bytes(b"old")
    f.chmod(0o600)
    changed = pp.apply(str(f), "s3cret", check_mode=True)[0]
    assert changed and f.read_bytes() == b"old"
    changed = pp.apply(str(f), None, state="absent", check_mode=True)[0]
    assert changed and f.exists()


def test_absent(tmp_path):
    f = tmp_path / "POOL"
    f.write_bytes(b"x")
    assert pp.apply(str(f), None, state="absent")[0]
    assert not f.exists()
    assert not pp.apply(str(f), None, state="absent")[0]


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(pp.PoolPasswordError, match="does not exist"):
        pp.apply(str(tmp_path / "nope" / "POOL"), "s3cret")


# --- the module itself, run the way Ansible runs it (JSON args on stdin) -------------------

def test_module_present_idempotent_and_secret_free(tmp_path):
    f = tmp_path / "POOL"
    args = {"path": str(f), "password": "s3cret-module", "owner": str(os.getuid()), "group": str(os.getgid())}
    out, proc = run_module(args, diff=True)
    assert out["changed"] is True, out
    assert out["mode"] == "0600"
    assert pp.decode(f.read_bytes()) == b"s3cret-module"
    assert "s3cret-module" not in proc.stdout + proc.stderr
    out = run_module(args)[0]
    assert out["changed"] is False


def test_module_check_mode(tmp_path):
    f = tmp_path / "POOL"
    out = run_module({"path": str(f), "password": "s3cret"}, check_mode=True)[0]
    assert out["changed"] is True
    assert not f.exists()


def test_module_owner_and_mode(tmp_path):
    if os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    f = tmp_path / "POOL"
    out = run_module({"path": str(f), "password": "s3cret", "owner": "nobody", "group": "root", "mode": "0400"})[0]
    assert out["changed"] is True
    st = f.stat()
    assert st.st_uid == 65534 and stat.S_IMODE(st.st_mode) == 0o400


@pytest.mark.parametrize("args,message", [
    ({"password": "s3cret", "mode": "0644"}, "group or others"),
    ({"password": "s3cret", "mode": "rw"}, "octal"),
    ({"password": ""}, "must not be empty"),
    ({"password": "s3cret\n"}, "must not contain a newline"),
    ({"password": "s3\ncret"}, "must not contain a newline"),
    ({"password": "s3\x00cret"}, "must not contain a NUL byte"),
    ({"password": "s3cret", "owner": "no-such-user-xyz"}, "does not exist"),
    ({}, "password"),
    ({"password": "s3cret", "state": "maybe"}, "state"),
])
def test_module_rejects_bad_input(tmp_path, args, message):
    args = dict(args, path=str(tmp_path / "POOL"))
    out, proc = run_module(args)
    assert out.get("failed") is True, out
    assert message in out["msg"]
    assert not (tmp_path / "POOL").exists()
    if args.get("password"):
        assert args["password"] not in proc.stdout
