"""Import hygiene: the agent runs inside other people's processes.

It may import only the standard library and msgpack, at module level and at
run time; never click, rich, psutil, pyrasite or the `dynupdate` CLI package.
Every module of the agent folder is checked, including ones added later.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT_DIR = ROOT / "agent"
FORBIDDEN = ["click", "rich", "psutil", "pyrasite", "dynupdate"]
#: what msgpack's compiled extension brings along
MSGPACK_EXTRAS = {"cython_runtime"}


def _allowed(name: str) -> bool:
    return name in {"dynupdate_agent", "msgpack"} | MSGPACK_EXTRAS or name.startswith("_cython_")


def _agent_modules() -> list:
    names = ["dynupdate_agent"]
    names += [f"dynupdate_agent.{p.stem}" for p in sorted(AGENT_DIR.glob("*.py")) if p.stem != "__init__"]
    return names


# Runs in a fresh interpreter: import everything, optionally start the agent and serve
# hello + status over its socket, then report which modules got loaded.
_PROBE = r"""
import importlib, json, os, socket, struct, sys
at_startup = set(sys.modules)  # whatever site and .pth files loaded is not the agent's doing
names = json.loads(sys.argv[1])
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
if sys.argv[2] == "serve":
    import dynupdate_agent
    from dynupdate_agent import wire
    path = dynupdate_agent.start()
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path)
    for kind in ("hello", "status", "nonsense"):
        wire.write_frame(s, {"type": kind})
        if kind != "nonsense":
            assert wire.read_frame(s)["ok"], kind
    wire.read_frame(s)
    s.close()
    dynupdate_agent.stop()
stdlib = set(sys.stdlib_module_names)
third_party = sorted({m.split(".")[0] for m in set(sys.modules) - at_startup} - stdlib)
print(json.dumps({"failed": failed, "third_party": third_party, "modules": sorted(sys.modules)}))
"""


def _probe(mode: str, tmp_path) -> dict:
    env = {"DYNUPDATE_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(_agent_modules()), mode], capture_output=True,
                          text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_agent_module_imports_without_cli_dependencies(tmp_path):
    result = _probe("import", tmp_path)
    assert result["failed"] == {}
    for name in _agent_modules():
        assert name in result["modules"]
    for bad in FORBIDDEN:
        assert not any(m == bad or m.startswith(bad + ".") for m in result["modules"]), f"{bad} was imported"
    assert [m for m in result["third_party"] if not _allowed(m)] == []


def test_running_agent_stays_stdlib_and_msgpack_only(tmp_path):
    result = _probe("serve", tmp_path)
    assert result["failed"] == {}
    for bad in FORBIDDEN:
        assert not any(m == bad or m.startswith(bad + ".") for m in result["modules"]), f"{bad} was imported"
    assert [m for m in result["third_party"] if not _allowed(m)] == []


def test_agent_package_is_the_agent_folder():
    proc = subprocess.run([sys.executable, "-c", "import dynupdate_agent; print(dynupdate_agent.__file__)"],
                          capture_output=True, text=True, timeout=30)
    assert Path(proc.stdout.strip()).resolve() == AGENT_DIR / "__init__.py"
