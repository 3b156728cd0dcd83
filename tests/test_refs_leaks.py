"""Issue 8 item 6: nothing the agent does leaks into the target.

- the process-wide umask is never changed, not even around the socket's bind()
  (an application thread creating folders meanwhile must get its own umask);
"""
import os
import stat
import sys

from conftest import TARGETS, dynupdate_json


def _proc_umask(pid: int) -> str:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return line.split()[1]
    raise AssertionError("no Umask line in /proc/PID/status")


def test_umask_unchanged_over_20_agent_starts(start_target, runtime_env):
    target = start_target([sys.executable, str(TARGETS / "refs_umask.py"), "20"], env=runtime_env)
    done = target.wait_for("DONE", timeout=60).split()
    made, wrong, starts = int(done[1]), int(done[2]), int(done[3])
    assert starts == 20 and made > 0, done
    assert wrong == 0, f"folders created while the agent started got the agent's umask: {done}"
    assert _proc_umask(target.pid) == "0022"
    folder = os.path.join(runtime_env["DYNUPDATE_RUNTIME_DIR"], f"dynupdate-{os.getuid()}")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert sorted(os.listdir(folder)) == [f"{target.pid}.sock"], "no staging socket is left behind"
    assert stat.S_IMODE(os.stat(os.path.join(folder, f"{target.pid}.sock")).st_mode) == 0o600
    code, status = dynupdate_json("status", "--pid", str(target.pid), env=runtime_env)
    assert code == 0 and status["pid"] == target.pid, status
