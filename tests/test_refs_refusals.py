"""Issue 8 item 5: bundles naming system modules are refused.

The agent's own modules and its dependency msgpack never; builtins, sys and the
rest of the standard library unless `--allow-stdlib` (request field
`allow_stdlib`). Refused offline by `check`/`apply` (exit 2, nothing sent) and,
for a request that bypasses the CLI's check, by the agent itself (error type
RefusedModule, exit 1); the target keeps running and answering either way.
"""
import inspect
import textwrap

import pytest

from conftest import dynupdate, dynupdate_json
from refsutil import App, raw_bundle, start_app
from shoputil import attach_module_output  # noqa: F401
from shoputil import start_module_target  # noqa: F401  (a fixture, used by name)

from dynupdate import errors
from dynupdate.client import Client

pytestmark = pytest.mark.usefixtures("attach_module_output")

STDLIB = ["builtins", "threading", "os", "sys", "os.path"]
NEVER = ["dynupdate_agent.server", "dynupdate_agent", "msgpack"]


@pytest.fixture(scope="module")
def app(request) -> App:
    return start_app(request.getfixturevalue("start_module_target"))


def write_bundle(folder, module: str, source: str = "X = 1\n") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patch.toml").write_text(f'name = "sys-{module}"\nversion = "9"\n[modules]\n"{module}" = "m.py"\n')
    (folder / "m.py").write_text(source)
    return str(folder)


@pytest.mark.parametrize("module", STDLIB + NEVER)
def test_refused_offline_by_check_exit_2(tmp_path, module):
    check = dynupdate("check", write_bundle(tmp_path / "b", module))
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert repr(module) in check.stderr


@pytest.mark.parametrize("module", ["threading", "dynupdate_agent.server"])
def test_refused_offline_by_apply_exit_2(app, tmp_path, module):
    folder = write_bundle(tmp_path / "b", module)
    code, data = dynupdate_json("apply", "--pid", str(app.pid), folder)
    assert code == 2, data
    assert module in data["error"]["message"]
    reason = "standard library" if module in STDLIB else "dynupdate agent"
    assert reason in data["error"]["message"], data
    assert app.status()["version"] == "base"


@pytest.mark.parametrize("module", ["builtins", "threading", "os"])
def test_allow_stdlib_flag_passes_the_offline_check(tmp_path, module):
    folder = write_bundle(tmp_path / "b", module)
    assert dynupdate("check", folder, "--allow-stdlib").returncode == 0


@pytest.mark.parametrize("module", NEVER)
def test_agent_and_its_dependency_never_allowed_offline(tmp_path, module):
    check = dynupdate("check", write_bundle(tmp_path / "b", module), "--allow-stdlib")
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert "never" in check.stderr


@pytest.mark.parametrize("module,allow", [(m, False) for m in STDLIB + NEVER] + [(m, True) for m in NEVER])
def test_refused_at_the_target_exit_1(app, module, allow):
    with Client.connect(app.pid) as client, pytest.raises(errors.RemoteError) as refused:
        client.apply(raw_bundle(module), timeout=5, allow_stdlib=allow)
    assert refused.value.exit_code == 1
    reply = refused.value.result
    assert reply["ok"] is False and reply["version"] == "base", reply
    assert reply["error"]["type"] == "RefusedModule", reply["error"]
    assert module in reply["error"]["message"]
    assert app.eval("svc.price(3)") == 3, "the target still serves its previous version"
    assert app.eval("__import__('threading').Thread.__module__") == "threading"


def test_allow_stdlib_patches_a_stdlib_module_and_rolls_back(app, tmp_path):
    source = inspect.getsource(textwrap) + "\n\ndef dynupdate_probe():\n    return 'patched'\n"
    folder = write_bundle(tmp_path / "tw", "textwrap", source)
    code, data = dynupdate_json("apply", "--pid", str(app.pid), folder)
    assert code == 2, data
    code, data = dynupdate_json("apply", "--pid", str(app.pid), folder, "--allow-stdlib")
    assert code == 0, data
    assert app.eval("__import__('textwrap').dynupdate_probe()") == "patched"
    assert app.eval("__import__('textwrap').dedent('  a')") == "a"
    code, data = app.rollback()
    assert code == 0, data
    assert app.eval("hasattr(__import__('textwrap'), 'dynupdate_probe')") is False
