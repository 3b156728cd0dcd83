"""Fleets with Ansible: the dynupdate.live collection and the example rollout playbook.

Five local "hosts" (connection local), each with its own real target process,
are driven by the real `ansible-playbook` with `scripts/ansible/rollout.yml`:
a canary batch first, then the rest; a failing host stops the rollout and rolls
back every host already done; a second run converges; a third changes nothing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, dynupdate_json

COLLECTIONS = ROOT / "scripts" / "ansible"
PLAYBOOK = COLLECTIONS / "rollout.yml"

APP = '''\
import http.server
import greet

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = greet.hello().encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("READY", server.server_address[1], flush=True)
server.serve_forever()
'''

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None and not
                                Path(sys.executable).with_name("ansible-playbook").exists(),
                                reason="ansible-core is not installed (it is in the test extra)")


def _bundle(folder: Path, version: str, requires: str = "base") -> Path:
    folder.mkdir(parents=True)
    (folder / "patch.toml").write_text(f'name = "greet-{version}"\nversion = "{version}"\nrequires = "{requires}"\n'
                                       f'[modules]\n"greet" = "greet.py"\n')
    (folder / "greet.py").write_text(f"def hello():\n    return 'hello {version}'\n")
    return folder


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Five target processes (one per host) started under `dynupdate run`; killed at the end."""
    from conftest import Target

    app = tmp_path_factory.mktemp("fleetapp")
    (app / "app.py").write_text(APP)
    (app / "greet.py").write_text("def hello():\n    return 'hello base'\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    targets = [Target([sys.executable, "-m", "dynupdate", "run", str(app / "app.py")], env=env, cwd=str(app))
               for _ in range(5)]
    try:
        ports = [t.ready_value() for t in targets]
        yield list(zip(targets, ports))
    finally:
        for t in targets:
            t.stop()


def _ansible_env(tmp: Path) -> dict:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
                ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-remote"),
                ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_RETRY_FILES_ENABLED="0",
                ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCALHOST_WARNING="0")


def _inventory(tmp: Path, fleet) -> Path:
    lines = ["[fleet]"] + [f"h{i + 1} target_pid={t.pid}" for i, (t, _) in enumerate(fleet)]
    lines += ["[fleet:vars]", "ansible_connection=local", f"ansible_python_interpreter={sys.executable}",
              f"dynupdate_executable='{sys.executable} -m dynupdate'"]
    path = tmp / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def _playbook(tmp: Path, fleet, bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ansible-playbook") or str(Path(sys.executable).with_name("ansible-playbook"))
    return subprocess.run([exe, "-i", str(_inventory(tmp, fleet)), str(PLAYBOOK), "-e", f"bundle_src={bundle}",
                           "-e", f"bundle_dest_dir={tmp / 'dest'}", "-e", "batch_size=2", "-f", "5", *extra],
                          capture_output=True, text=True, timeout=240, env=_ansible_env(tmp))


def _recap(output: str) -> dict:
    """host -> {ok, changed, failed, rescued} from the PLAY RECAP."""
    rows = {}
    for host, fields in re.findall(r"^(h\d)\s+:\s+(.*)$", output, re.M):
        rows[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return rows


def _get(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return resp.read().decode()


def _version(pid: int) -> str:
    code, data = dynupdate_json("status", "--pid", str(pid))
    assert code == 0, data
    return data["version"]


def test_rollout_canary_failure_rollback_then_converge(fleet, tmp_path):
    bundle = _bundle(tmp_path / "greet-2", "2")
    # host 4 runs another version, so the bundle's `requires = "base"` refuses it there
    other = _bundle(tmp_path / "other", "x")
    h4 = fleet[3][0]
    code, data = dynupdate_json("apply", "--pid", str(h4.pid), str(other))
    assert code == 0, data

    failed = _playbook(tmp_path, fleet, bundle)
    assert failed.returncode != 0, failed.stdout
    assert "RequirementNotMet" in failed.stdout or "requires version" in failed.stdout, failed.stdout
    versions = [_version(t.pid) for t, _ in fleet]
    assert versions == ["base", "base", "base", "x", "base"], failed.stdout
    assert [_get(p) for _, p in fleet] == ["hello base"] * 3 + ["hello x", "hello base"]
    recap = _recap(failed.stdout)
    assert recap["h4"]["rescued"] == 1 and recap["h4"]["failed"] == 1, failed.stdout

    code, data = dynupdate_json("rollback", "--pid", str(h4.pid))
    assert code == 0, data

    ok = _playbook(tmp_path, fleet, bundle)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [_get(p) for _, p in fleet] == ["hello 2"] * 5
    # the canary (first batch) was updated before every other host
    applied = []
    for t, _ in fleet:
        code, data = dynupdate_json("status", "--pid", str(t.pid))
        applied.append(data["history"][-1]["applied_at"])
    assert applied[0] < min(applied[1:])

    again = _playbook(tmp_path, fleet, bundle)
    assert again.returncode == 0, again.stdout
    assert all(row["changed"] == 0 for row in _recap(again.stdout).values()), again.stdout

    # check mode of the module on its own: a dry run in the target, nothing changes
    exe = shutil.which("ansible") or str(Path(sys.executable).with_name("ansible"))
    undo = subprocess.run([exe, "-i", str(_inventory(tmp_path, fleet)), "h1", "-m", "dynupdate.live.dynupdate",
                           "-a", json.dumps({"pid": fleet[0][0].pid, "state": "rolled_back", "undo_version": "2",
                                             "executable": f"{sys.executable} -m dynupdate"}), "--check"],
                          capture_output=True, text=True, timeout=120, env=_ansible_env(tmp_path))
    assert undo.returncode == 0 and "CHANGED" in undo.stdout, undo.stdout + undo.stderr
    assert _version(fleet[0][0].pid) == "2"
    for t, _ in fleet:
        code, data = dynupdate_json("rollback", "--pid", str(t.pid), "--to", "base")
        assert code == 0, data
