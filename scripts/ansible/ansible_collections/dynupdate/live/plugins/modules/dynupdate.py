#!/usr/bin/python
"""Ansible module: one idempotent dynupdate verb on the processes of one host.

It drives the dynupdate CLI installed on the host (its `--json` output is the
published contract), so the module stays a thin adapter: choose the process,
ask its current version, do nothing when it already is as asked, else apply or
roll back and return the CLI's JSON result.
"""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: dynupdate
short_description: Apply, roll back or report a dynupdate bundle on a running Python process
description:
  - Live-patches a running Python process (or a pre-fork process tree) with a dynupdate bundle
    already present on the host, rolls it back, or reports the running version.
  - Idempotent. C(state=applied) reports C(changed=false) when the process already runs the
    bundle's version; C(state=rolled_back) when it does not (or already runs I(version)).
  - Check mode runs C(dynupdate apply --dry-run) in the target, which changes nothing.
options:
  pid:
    description: Process id of the target.
    type: int
  pidfile:
    description: File holding the target's pid (e.g. gunicorn's C(-p)).
    type: path
  process:
    description: Regular expression matched against the command lines of the host's processes;
      exactly one must match (with I(tree), the oldest match is taken as the master).
    type: str
  tree:
    description: Treat the process as the master of a pre-fork tree (C(--tree)).
    type: bool
    default: false
  bundle:
    description: Path of the bundle folder on the host (copy it there first).
      Required for C(state=applied); with C(state=rolled_back) it names the update to undo.
    type: path
  state:
    description: C(applied), C(rolled_back) or C(status).
    type: str
    choices: [applied, rolled_back, status]
    default: applied
  version:
    description: With C(state=rolled_back), roll back to this version (C(--to)).
    type: str
  undo_version:
    description: With C(state=rolled_back), undo the last update only where the process runs this
      version (the version a failed rollout applied); elsewhere nothing changes. Needs no bundle on the host.
    type: str
  timeout:
    description: Seconds to wait for a safe point.
    type: float
    default: 10
  lazy:
    description: Transfer instance state lazily.
    type: bool
    default: false
  key_file:
    description: Signing key on the host, for targets that require signed bundles.
    type: path
  executable:
    description: The dynupdate command on the host.
    type: str
    default: dynupdate
"""

EXAMPLES = r"""
- name: Apply the hotfix to the service
  dynupdate.live.dynupdate:
    pidfile: /run/shop/gunicorn.pid
    tree: true
    bundle: /srv/bundles/shop-v2

- name: Undo it again
  dynupdate.live.dynupdate:
    pidfile: /run/shop/gunicorn.pid
    tree: true
    bundle: /srv/bundles/shop-v2
    state: rolled_back
"""

RETURN = r"""
pid:
  description: The target's pid.
  type: int
  returned: always
version:
  description: The version the target runs at the end.
  type: str
  returned: always
previous_version:
  description: The version before the task.
  type: str
  returned: always
result:
  description: The dynupdate CLI's JSON result (apply/rollback/status --json).
  type: dict
  returned: always
"""

import json
import os
import re
import shlex
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule


def _find_pid(module: AnsibleModule) -> int:
    p = module.params
    chosen = [k for k in ("pid", "pidfile", "process") if p[k] is not None]
    if len(chosen) != 1:
        module.fail_json(msg="give exactly one of pid, pidfile, process")
    if p["pid"] is not None:
        return int(p["pid"])
    if p["pidfile"] is not None:
        try:
            with open(p["pidfile"]) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError) as exc:
            module.fail_json(msg=f"{p['pidfile']}: cannot read a pid ({exc})")
    pattern = re.compile(p["process"])
    found: List[tuple] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            started = os.stat(f"/proc/{entry}").st_mtime
        except OSError:
            continue
        if cmdline and pattern.search(cmdline) and "ansible" not in cmdline:
            found.append((started, int(entry), cmdline))
    if not found:
        module.fail_json(msg=f"no process matches {p['process']!r}")
    if len(found) > 1 and not p["tree"]:
        module.fail_json(msg=f"{len(found)} processes match {p['process']!r}: "
                             f"{', '.join(str(f[1]) for f in found)}; narrow the pattern or use pid")
    return sorted(found)[0][1]


def _run(module: AnsibleModule, *args: str) -> tuple:
    exe = shlex.split(module.params["executable"])
    rc, out, err = module.run_command(exe + list(args))
    try:
        data = json.loads(out) if out.strip() else {}
    except ValueError:
        data = {}
    return rc, data, err


def _bundle_version(module: AnsibleModule) -> Dict[str, Any]:
    rc, data, err = _run(module, "check", module.params["bundle"], "--json")
    if rc != 0:
        module.fail_json(msg=f"the bundle does not validate: {err.strip() or data}", rc=rc)
    return data


def _versions(status: Dict[str, Any]) -> List[Optional[str]]:
    """Versions of every process the status covers (one, or each pid of a tree)."""
    if "pids" in status:
        return [row.get("version") for row in status["pids"]]
    return [status.get("version")]


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            pid=dict(type="int"), pidfile=dict(type="path"), process=dict(type="str"),
            tree=dict(type="bool", default=False), bundle=dict(type="path"),
            state=dict(type="str", default="applied", choices=["applied", "rolled_back", "status"]),
            version=dict(type="str"), undo_version=dict(type="str"), timeout=dict(type="float", default=10.0),
            lazy=dict(type="bool", default=False), key_file=dict(type="path", no_log=False),
            executable=dict(type="str", default="dynupdate"),
        ),
        required_if=[("state", "applied", ("bundle",))],
        supports_check_mode=True,
    )
    p = module.params
    pid = _find_pid(module)
    target = ["--pid", str(pid)] + (["--tree"] if p["tree"] else [])
    rc, status, err = _run(module, "status", *target, "--json")
    if rc != 0:
        module.fail_json(msg=f"status of pid {pid} failed (exit {rc}): {err.strip()}", rc=rc, result=status)
    current = _versions(status)
    outcome: Dict[str, Any] = {"pid": pid, "previous_version": current[0], "version": current[0]}
    if p["state"] == "status":
        module.exit_json(changed=False, result=status, **outcome)

    if p["state"] == "applied":
        wanted = _bundle_version(module)["version"]
        if all(v == wanted for v in current):
            module.exit_json(changed=False, result=status, msg=f"already at {wanted}", **outcome)
        args = ["apply", *target, p["bundle"], "--timeout", str(p["timeout"]), "--json"]
        if p["lazy"]:
            args.append("--lazy")
        if p["key_file"]:
            args += ["--key-file", p["key_file"]]
    else:
        if p["version"] is not None:
            done = all(v == p["version"] for v in current)
        elif p["undo_version"] is not None:
            done = all(v != p["undo_version"] for v in current)
        elif p["bundle"] is not None:  # undo this bundle where it is the running version
            done = all(v != _bundle_version(module)["version"] for v in current)
        else:
            done = False
        if done:
            module.exit_json(changed=False, result=status, **outcome)
        args = ["rollback", *target, "--timeout", str(p["timeout"]), "--json"]
        if p["version"] is not None:
            args += ["--to", p["version"]]
    if module.check_mode:
        if p["state"] == "applied":
            args.append("--dry-run")
            rc, result, err = _run(module, *args)
            if rc != 0:
                module.fail_json(msg=f"dry run refused (exit {rc}): {(result.get('error') or {}).get('message') or err}",
                                 rc=rc, result=result, **outcome)
            module.exit_json(changed=True, result=result, **outcome)
        module.exit_json(changed=True, result=status, **outcome)
    rc, result, err = _run(module, *args)
    outcome["version"] = result.get("version", outcome["version"])
    if rc != 0 or not result.get("ok", False):
        message = (result.get("error") or {}).get("message") or err.strip() or f"exit {rc}"
        module.fail_json(msg=f"dynupdate {args[0]} on pid {pid} failed (exit {rc}): {message}",
                         rc=rc, result=result, **outcome)
    module.exit_json(changed=True, result=result, **outcome)


if __name__ == "__main__":
    main()
