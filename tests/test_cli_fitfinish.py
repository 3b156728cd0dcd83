"""Issue 15: a CLI that tells the truth in every situation, driven as a user would.

One target (`dynupdate run app.py`, tests/targets/ff_app) is shared by the
module; every test that updates it rolls it back to base before it ends, and
checks what it claims against `status --json` and the target's own answers.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TARGETS, Target, dynupdate, dynupdate_json, wait_until

APP = TARGETS / "ff_app" / "app.py"
FFMOD_V2 = '''"""v2: a new greeting constant, new code."""
GREETING = "hi"
TABLE = {"apple": 2}
CACHE = {}


def hold(gate):
    print("HOLDING v2", flush=True)
    gate.wait()


def greet():
    return f"{GREETING} from v2"
'''


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory):
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="du-ff-", dir="/tmp")
    yield {"DYNUPDATE_RUNTIME_DIR": base}
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def app(runtime_dir):
    env = {**os.environ, **runtime_dir, "PYTHONUNBUFFERED": "1"}
    target = Target([sys.executable, "-m", "dynupdate", "run", str(APP)], env=env, cwd=str(APP.parent))
    try:
        target.port = int(target.ready_value())
        yield target
    finally:
        target.stop()


def _greet(app) -> str:
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as conn:
        return conn.makefile().readline().strip()


def _version(app, env) -> str:
    code, data = dynupdate_json("status", "--pid", str(app.pid), "--no-inject", env=env)
    assert code == 0, data
    return data["version"]


def _back_to_base(app, env) -> None:
    if _version(app, env) != "base":
        proc = dynupdate("rollback", "--pid", str(app.pid), "--to", "base", env=env)
        assert proc.returncode == 0, proc.stderr
    assert _greet(app) == "hello from v1"


def _bundle(tmp_path, modules, extra="", name="ff-v2"):
    folder = tmp_path / name
    folder.mkdir()
    lines = [f'name = "{name}"', 'version = "2"', extra, "[modules]"]
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
        lines.append(f'"{module}" = "{module}.py"')
    (folder / "patch.toml").write_text("\n".join(lines) + "\n")
    return str(folder)


# --- 1, 2: what is not imported, and what keeps its live value ------------------------------------

def test_unimported_module_and_kept_constant_are_warned(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2, "ffextra": "VALUE = 2\n"})
    assert _greet(app) == "hello from v1"  # fills ffmod.CACHE: live state that differs from the new source's {}
    proc = dynupdate("apply", "--pid", str(app.pid), bundle, env=runtime_dir)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "module 'ffextra' is not imported by the process: it was installed for a later import" in proc.stderr
        assert "ffmod.GREETING: the new source sets 'hi' but the process keeps its live value 'hello'" in proc.stderr
        assert "__dynupdate_transfer__" in proc.stderr
        assert "ffmod.TABLE: the new source sets {'apple': 2} but the process keeps its live value" in proc.stderr
        assert "ffmod.CACHE" not in proc.stderr, "an empty container in the new source is state: not compared"
        assert _greet(app) == "hello from v2", "code is new, the constant kept its live value, as warned"
    finally:
        _back_to_base(app, runtime_dir)
    code, data = dynupdate_json("apply", "--pid", str(app.pid), bundle, env=runtime_dir)
    try:
        assert code == 0, data
        assert any("ffextra" in w and "later import" in w for w in data["warnings"])
        assert any(w.startswith("ffmod.GREETING:") for w in data["warnings"])
    finally:
        _back_to_base(app, runtime_dir)


def test_unfindable_module_is_refused_unless_marked_new(app, runtime_dir, tmp_path):
    typo = _bundle(tmp_path, {"ffmod": FFMOD_V2, "countrs": "X = 1\n"}, name="typo")
    proc = dynupdate("apply", "--pid", str(app.pid), typo, env=runtime_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "module 'countrs' is neither imported by the process nor importable" in proc.stderr
    assert "new_modules = ['countrs']" in proc.stderr
    assert _version(app, runtime_dir) == "base" and _greet(app) == "hello from v1", "nothing changed"
    marked = _bundle(tmp_path, {"ffmod": FFMOD_V2, "countrs": "X = 1\n"}, extra='new_modules = ["countrs"]',
                     name="marked")
    code, data = dynupdate_json("apply", "--pid", str(app.pid), marked, env=runtime_dir)
    try:
        assert code == 0, data
        assert any("'countrs' is new" in w for w in data["warnings"])
        assert data["updated"]["new_modules"] == ["countrs"]
    finally:
        _back_to_base(app, runtime_dir)


def test_new_modules_must_name_bundle_modules(tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2}, extra='new_modules = ["other"]')
    proc = dynupdate("check", bundle)
    assert proc.returncode == 2 and "new_modules" in proc.stderr


def test_dry_run_shows_the_plan(app, runtime_dir, tmp_path):
    source = FFMOD_V2 + "\n\ndef added():\n    return 1\n"
    source = source.replace("def hold(gate):", "def hold(gate, *, extra=None):")
    bundle = _bundle(tmp_path, {"ffmod": source})
    proc = dynupdate("apply", "--pid", str(app.pid), bundle, "--dry-run", env=runtime_dir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "nothing was changed" in out
    plan = {line.split()[0]: line for line in out.splitlines()[out.splitlines().index("plan:") + 1:]}
    assert "ffmod.hold" in plan["updated"] and "ffmod.greet" in plan["updated"]
    assert "ffmod.added" in plan["added"]
    assert "ffmod.GREETING" in plan["kept"]
    for key in ("replaced", "removed", "new", "instances"):
        assert key in plan, out
    assert _version(app, runtime_dir) == "base"


# --- 3: a closed pipe never changes the outcome or the exit code ----------------------------------

def test_closed_stdout_and_stderr_never_change_the_outcome(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    env = {**os.environ, **runtime_dir}
    try:
        for attempt in range(4):
            args = ["apply", "--pid", str(app.pid), bundle] if attempt % 2 == 0 else ["rollback", "--pid", str(app.pid)]
            if attempt >= 2:
                args.append("--json")
            cli = subprocess.Popen([sys.executable, "-m", "dynupdate", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=env)
            cli.stdout.close()  # the reader went away before anything was written (`| head -0`)
            cli.stderr.close()
            code = cli.wait(120)
            expected = "2" if attempt % 2 == 0 else "base"
            assert code == 0, f"attempt {attempt}: {args} exited {code}"
            assert _version(app, runtime_dir) == expected, f"attempt {attempt}: exit 0 must mean it landed"
        for command, expected in ((f"apply --pid {app.pid} {bundle}", "2"), (f"rollback --pid {app.pid}", "base")):
            shell = f"{sys.executable} -m dynupdate {command} >&- 2>&-"  # no stdout/stderr at all
            proc = subprocess.run(["bash", "-c", shell], timeout=120, env=env)
            assert proc.returncode == 0 and _version(app, runtime_dir) == expected, command
    finally:
        _back_to_base(app, runtime_dir)


def test_head_closing_the_pipe_over_several_tries(app, runtime_dir, tmp_path):
    """The issue's case: `dynupdate apply ... | head -2`, the exit code compared with `status --json` each time."""
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    try:
        for attempt in range(4):
            command = f"apply --pid {app.pid} {bundle}" if attempt % 2 == 0 else f"rollback --pid {app.pid}"
            shell = f"{sys.executable} -m dynupdate {command} 2>&1 | head -2; exit ${{PIPESTATUS[0]}}"
            proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, **runtime_dir})
            assert proc.returncode == 0, f"attempt {attempt}: {proc.stdout}{proc.stderr}"
            assert len(proc.stdout.splitlines()) <= 2 and "Traceback" not in proc.stdout + proc.stderr
            assert _version(app, runtime_dir) == ("2" if attempt % 2 == 0 else "base"), f"attempt {attempt}"
    finally:
        _back_to_base(app, runtime_dir)


# --- 4: Ctrl-C during the safe-point wait ------------------------------------------------------------

def test_ctrl_c_during_the_wait_abandons_and_says_so(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    seen = len(app.lines)
    os.kill(app.pid, signal.SIGUSR1)  # a thread now sits in ffmod.hold: no safe point
    wait_until(lambda: "HOLDING" in app.lines[seen:], message="the holder thread")
    cli = subprocess.Popen([sys.executable, "-m", "dynupdate", "apply", "--pid", str(app.pid), bundle,
                            "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **runtime_dir})
    try:
        for line in cli.stderr:  # the safe-point phase starts once prepare is marked done
            if "✓ prepare" in line:
                break
        time.sleep(0.3)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 130, out + err
        assert "the apply was abandoned; pid" in err and "runs 'base' unchanged" in err
        assert "Traceback" not in err
        assert _version(app, runtime_dir) == "base"
        assert _greet(app) == "hello from v1", "the target serves its previous version"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        os.kill(app.pid, signal.SIGUSR2)
    # the held thread has returned: the same update now goes in
    proc = dynupdate("apply", "--pid", str(app.pid), bundle, env=runtime_dir)
    try:
        assert proc.returncode == 0, proc.stderr
    finally:
        _back_to_base(app, runtime_dir)


def test_ctrl_c_after_the_update_landed_says_it_landed(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    seen = len(app.lines)
    os.kill(app.pid, signal.SIGUSR1)
    wait_until(lambda: "HOLDING" in app.lines[seen:], message="the holder thread")
    cli = subprocess.Popen([sys.executable, "-m", "dynupdate", "apply", "--pid", str(app.pid), bundle,
                            "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, **runtime_dir})
    try:
        for line in cli.stderr:
            if "✓ prepare" in line:
                break
        os.kill(cli.pid, signal.SIGSTOP)  # the CLI cannot read the answer: the Ctrl-C will come after it
        os.kill(app.pid, signal.SIGUSR2)  # the safe point is reached, the update lands
        wait_until(lambda: _version(app, runtime_dir) == "2", timeout=30, message="the update to land")
        os.kill(cli.pid, signal.SIGINT)
        os.kill(cli.pid, signal.SIGCONT)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, out + err
        assert "interrupted too late: the apply had already landed" in err and "runs '2'" in err
        assert _greet(app) == "hello from v2", "the target runs the new code"
    finally:
        if cli.poll() is None:
            os.kill(cli.pid, signal.SIGCONT)
            cli.kill()
            cli.wait()
        _back_to_base(app, runtime_dir)


# --- 5: run -c, and the program's traceback only --------------------------------------------------

def test_run_dash_c_like_python(tmp_path):
    proc = dynupdate("run", "-c", "import sys, dynupdate_agent; print(sys.argv, dynupdate_agent.running())",
                     "a", "b", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['-c', 'a', 'b'] True"
    proc = dynupdate("run", "--", sys.executable, "-c", "raise SystemExit(7)", timeout=60)
    assert proc.returncode == 7


@pytest.mark.parametrize("form", ["script", "-c"])
def test_ctrl_c_in_the_program_shows_only_its_traceback(tmp_path, form):
    code = "import os, signal\ndef serve():\n    os.kill(os.getpid(), signal.SIGINT)\n    input()\nserve()\n"
    script = tmp_path / "prog.py"
    script.write_text(code)
    args = [str(script)] if form == "script" else ["-c", code]
    proc = dynupdate("run", *args, timeout=60)
    assert proc.returncode in (130, -signal.SIGINT), proc.stderr
    assert "KeyboardInterrupt" in proc.stderr and "in serve" in proc.stderr
    assert "launch.py" not in proc.stderr and "runpy" not in proc.stderr, proc.stderr


# --- 6: status says when it injects, in every mode ----------------------------------------------

def test_status_announces_injection_even_with_json(start_target, runtime_env):
    plain = start_target([sys.executable, str(TARGETS / "fnd_plain.py")], env=runtime_env)
    proc = dynupdate("status", "--pid", str(plain.pid), "--json", "--no-inject", env=runtime_env)
    assert proc.returncode == 3 and "no dynupdate agent runs in pid" in proc.stderr
    proc = dynupdate("status", "--pid", str(plain.pid), "--json", env=runtime_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pid"] == plain.pid, "stdout stays one JSON object"
    assert f"no agent in pid {plain.pid}; injecting one" in proc.stderr


# --- 7: ps shows the program and fits the terminal; help has examples -----------------------------

def test_ps_at_120_columns_shows_the_program(app, runtime_dir):
    proc = dynupdate("ps", env={**runtime_dir, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 120 for line in lines), "\n".join(lines)
    row = next(line for line in lines if f" {app.pid} " in line)
    assert "app.py" in row and "launch.py" not in row, row
    code, rows = dynupdate_json("ps", env=runtime_dir)
    mine = next(r for r in rows if r["pid"] == app.pid)
    assert mine["program"].endswith("app.py") and "launch.py" in mine["cmdline"]


def test_every_command_help_has_an_example():
    for command in ("run", "attach", "status", "ps", "check", "apply", "rollback", "demo"):
        proc = dynupdate(command, "--help")
        assert proc.returncode == 0
        assert "Example" in proc.stdout, command
    ps_help = dynupdate("ps", "--help").stdout
    assert "list" in ps_help and "one JSON object" not in ps_help


# --- 10: history keeps rolled-back versions; sockets do not outlive their process -----------------

def test_history_keeps_rolled_back_entries(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    before = time.time()
    assert dynupdate("apply", "--pid", str(app.pid), bundle, env=runtime_dir).returncode == 0
    _back_to_base(app, runtime_dir)
    code, data = dynupdate_json("status", "--pid", str(app.pid), env=runtime_dir)
    mine = [h for h in data["history"] if h["name"] == "ff-v2"][-1]
    assert mine["version"] == "2" and mine["applied_at"] >= before - 1
    assert mine["rolled_back_at"] >= mine["applied_at"]
    assert data["version"] == "base"
    table = dynupdate("status", "--pid", str(app.pid), env={**runtime_dir, "COLUMNS": "200"}).stdout
    assert "rolled back at" in table


def test_sigterm_removes_the_socket(start_target, runtime_env):
    t = start_target([sys.executable, "-m", "dynupdate", "run", "-c",
                      "import time; print('READY', flush=True); time.sleep(600)"], env=runtime_env)
    sock = os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}", f"{t.pid}.sock")
    wait_until(lambda: os.path.exists(sock), message="the agent socket")
    os.kill(t.pid, signal.SIGTERM)
    assert t.proc.wait(20) == -signal.SIGTERM, "the process still dies of SIGTERM"
    assert not os.path.exists(sock)


def test_the_programs_own_signal_handling_is_kept_and_sigint_removes_the_socket(start_target, runtime_env):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM,\n"
            "              lambda *a: (print('TERM handled by the program', flush=True), sys.exit(3)))\n"
            "print('READY', flush=True)\n"
            "time.sleep(600)\n")
    folder = os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}")
    t = start_target([sys.executable, "-m", "dynupdate", "run", "-c", code], env=runtime_env)
    wait_until(lambda: os.path.exists(os.path.join(folder, f"{t.pid}.sock")), message="the agent socket")
    os.kill(t.pid, signal.SIGTERM)
    assert t.proc.wait(20) == 3, "the program's handler decides"
    t.wait_for("TERM handled by the program")
    assert not os.path.exists(os.path.join(folder, f"{t.pid}.sock"))
    t2 = start_target([sys.executable, "-m", "dynupdate", "run", "-c",
                       "import time; print('READY', flush=True); time.sleep(600)"], env=runtime_env)
    wait_until(lambda: os.path.exists(os.path.join(folder, f"{t2.pid}.sock")), message="the agent socket")
    os.kill(t2.pid, signal.SIGINT)
    assert t2.proc.wait(20) in (130, -signal.SIGINT)
    assert not os.path.exists(os.path.join(folder, f"{t2.pid}.sock"))


def test_ps_removes_sockets_of_dead_processes(app, runtime_dir):
    folder = os.path.join(runtime_dir["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}")
    with open("/proc/sys/kernel/pid_max") as fh:
        dead_pid = int(fh.read()) + 1  # no process can have it: never reused while the test runs
    stale = os.path.join(folder, f"{dead_pid}.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    live = os.path.join(folder, f"{app.pid}.sock")
    proc = dynupdate("ps", "--json", env=runtime_dir)
    assert proc.returncode == 0
    assert "removed 1 socket(s) left by processes that no longer exist" in proc.stderr
    assert not os.path.exists(stale), "a dead process's socket is removed"
    assert os.path.exists(live), "a live one is kept"


# --- 11: non-terminal output: phases, no wrapping, the user's frames ------------------------------

def test_failed_apply_marks_phases_truthfully_and_shows_user_frames(app, runtime_dir, tmp_path):
    failing = FFMOD_V2 + "\n\ndef __dynupdate_transfer__(old):\n    migrate(old)\n\n\ndef migrate(old):\n" \
                         "    raise ValueError('cannot migrate')\n"
    bundle = _bundle(tmp_path, {"ffmod": failing})
    proc = dynupdate("apply", "--pid", str(app.pid), bundle, env={**runtime_dir})
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert err.count("✓ prepare") == 1 and err.count("✓ safepoint") == 1
    assert "✓ swap" not in err and "✓ transfer" not in err, err
    assert "✗ transfer" in err
    assert "ffmod.py\", line" in err and "in migrate" in err, "the bundle's frames are shown"
    assert "updater.py" not in err and "agent frame(s) hidden" in err
    verbose = dynupdate("apply", "--pid", str(app.pid), bundle, "--verbose", env={**runtime_dir})
    assert verbose.returncode == 1 and "updater.py" in verbose.stderr
    assert _version(app, runtime_dir) == "base" and _greet(app) == "hello from v1"


def test_successful_apply_marks_every_phase_once(app, runtime_dir, tmp_path):
    bundle = _bundle(tmp_path, {"ffmod": FFMOD_V2})
    proc = dynupdate("apply", "--pid", str(app.pid), bundle, env=runtime_dir)
    try:
        assert proc.returncode == 0, proc.stderr
        for phase in ("prepare", "safepoint", "swap", "transfer"):
            assert proc.stderr.count(f"✓ {phase}") == 1, proc.stderr
    finally:
        _back_to_base(app, runtime_dir)


def test_piped_output_is_not_wrapped(tmp_path):
    deep = tmp_path / ("a-long-folder-name-" * 6) / "bundle"
    deep.mkdir(parents=True)
    proc = dynupdate("check", str(deep), env={"COLUMNS": ""})
    assert proc.returncode == 2
    assert str(deep / "patch.toml") in proc.stderr, "a long path stays on one line"


# --- 8: the demo from a normal (non-editable) install ---------------------------------------------

@pytest.mark.timeout(600)
def test_demo_from_a_non_editable_install(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # as a user would: `pip install .` (build isolation fetches the build backend from the package index)
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                              str(ROOT)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    offline = ("No matching distribution", "Could not find a version", "NewConnectionError", "Max retries exceeded",
               "ProxyError", "Temporary failure in name resolution")
    if install.returncode != 0 and any(s in install.stdout + install.stderr for s in offline):
        pytest.skip("the package index is unreachable: cannot fetch the build backend to build the package")
    assert install.returncode == 0, install.stdout + install.stderr
    where = subprocess.run([str(py), "-c", "import dynupdate; print(dynupdate.__file__)"], capture_output=True,
                           text=True, cwd=str(tmp_path))
    assert str(venv) in where.stdout, "the demo must run from the installed copy, not the checkout"
    demo = subprocess.run([str(venv / "bin" / "dynupdate"), "demo"], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo finished" in demo.stdout


# --- 9 (CLI side): the CLI's own code parses on every supported Python ----------------------------

def test_cli_sources_compile_on_every_supported_python():
    import glob

    found = []
    for minor in range(9, 14):
        candidates = sorted(glob.glob(f"/root/.pyenv/versions/3.{minor}.*/bin/python"))
        if not candidates:
            continue
        found.append(minor)
        files = sorted(glob.glob(str(ROOT / "dynupdate" / "*.py")))
        code = "import sys, py_compile\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"
        proc = subprocess.run([candidates[-1], "-c", code, *files], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"3.{minor}: {proc.stderr}"
    if not found:
        pytest.skip("no pyenv interpreters 3.9-3.13 on this machine")
