"""Issue 9, items 1, 2, 7: the signature covers every field that changes what the target does.

Against a real target that requires signatures (rel_app, key in DYNUPDATE_KEY_FILE),
as a same-uid peer without the key would try it:
- a module named "a=<digest>\\nb" carrying another module's digest (the forgery that
  newline-joined signed text allowed) is refused, and so is any non-identifier name;
- a subset of a signed 3-module bundle, or its modules reordered, is refused;
- a signed eager bundle refused for a failing transfer hook stays refused when sent
  with the request-level `lazy: true` (the signature covers that option too);
- a key file readable by group/others is refused by the CLI (exit 2) and by the agent.
Positive controls (the untouched signed bundle passes a dry run) show each refusal
is the signature's doing, not an unrelated failure.
"""
import json
import os
import secrets
import sys

import pytest

from conftest import TARGETS, dynupdate

sys.path.insert(0, str(TARGETS))
from rel_helpers import V2, assert_at_base, module_output, snapshot, start_module_target, start_rel  # noqa: E402,F401,F811

from dynupdate import errors  # noqa: E402
from dynupdate.bundle import load_bundle, read_key  # noqa: E402
from dynupdate.client import Client  # noqa: E402

pytestmark = pytest.mark.usefixtures("module_output")

EXTRA = "VALUE = {n}\n\ndef which():\n    return {n}\n"


@pytest.fixture(scope="module")
def key_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    path = str(folder / "good.key")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
        fh.write(secrets.token_hex(24) + "\n")
    return path


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """rel_v2 plus two new modules: a 3-module bundle."""
    folder = tmp_path_factory.mktemp("three")
    with open(os.path.join(V2, "items.py")) as fh:
        (folder / "items.py").write_text(fh.read())
    (folder / "extra1.py").write_text(EXTRA.format(n=1))
    (folder / "extra2.py").write_text(EXTRA.format(n=2))
    (folder / "patch.toml").write_text('name = "rel-three"\nversion = "3m"\nrequires = "base"\n'
                                       'new_modules = ["relapp.extra1", "relapp.extra2"]\n[modules]\n'
                                       '"relapp.items" = "items.py"\n"relapp.extra1" = "extra1.py"\n'
                                       '"relapp.extra2" = "extra2.py"\n')
    return str(folder)


@pytest.fixture(scope="module")
def signed(start_module_target, key_path):  # noqa: F811
    rel = start_rel(start_module_target, "--items", "10", env={"DYNUPDATE_KEY_FILE": key_path})
    rel.before = snapshot(rel)
    return rel


def send(rel, bundle, **options):
    """Apply over the real socket; returns the error reply (the test expects a refusal)."""
    with Client.connect(rel.pid) as client:
        with pytest.raises(errors.RemoteError) as info:
            client.apply(bundle, **options)
    return info.value.remote


def dry_run_ok(rel, bundle, **options):
    with Client.connect(rel.pid) as client:
        reply = client.apply(bundle, dry_run=True, **options)
    assert reply["ok"] and reply["dry_run"], reply


def test_newline_in_a_module_name_cannot_forge_a_signed_bundle(signed, key_path, three):
    key = read_key(key_path)
    good = load_bundle(three, key=key)
    dry_run_ok(signed, good)                                        # the signed bundle itself is fine
    items, extra1, _ = good["modules"]
    forged = dict(good, modules=[{"name": f"{items['name']}={items['sha256']}\n{extra1['name']}",
                                  "file": extra1["file"], "source": extra1["source"], "sha256": extra1["sha256"]}])
    error = send(signed, forged)
    assert error["type"] == "BadRequest" and "not a dotted Python module name" in error["message"], error
    for bad in ("relapp.items\n", "relapp..items", "relapp.items=x", "1relapp", "relapp.items ", ""):
        error = send(signed, dict(good, modules=[dict(items, name=bad)]))
        assert error["type"] == "BadRequest", (bad, error)
    assert_at_base(signed, signed.before)


def test_a_subset_or_reordering_of_a_signed_bundle_is_refused(signed, key_path, three):
    good = load_bundle(three, key=read_key(key_path))
    mods = good["modules"]
    for variant in ([mods[0]], [mods[0], mods[2]], [mods[1], mods[2]], [mods[2], mods[1], mods[0]]):
        error = send(signed, dict(good, modules=variant))
        assert error["type"] == "SignatureError", error
    a, b, c = mods                                                   # only c's code, under a name that
    glued = f"{a['name']}={a['sha256']}\n{b['name']}={b['sha256']}\n{c['name']}"  # spells a and b's lines
    error = send(signed, dict(good, modules=[dict(c, name=glued)]))
    assert error["type"] == "BadRequest", error
    renamed = dict(mods[1], file="other.py")                          # the file name is signed too
    assert send(signed, dict(good, modules=[mods[0], renamed, mods[2]]))["type"] == "SignatureError"
    assert_at_base(signed, signed.before)


def test_lazy_cannot_turn_a_refused_signed_bundle_into_an_applied_one(signed, key_path):
    key = read_key(key_path)
    signed.faults(fail={"transfer": -1})                            # every instance's transfer hook raises
    try:
        proc = dynupdate("apply", "--pid", str(signed.pid), V2, "--key-file", key_path, "--json")
        assert proc.returncode == 1, proc                           # eager: refused, rolled back
        assert json.loads(proc.stdout)["error"]["type"] != "SignatureError", proc.stdout
        assert_at_base(signed, signed.before)

        eager = load_bundle(V2, key=key)                            # signed for an apply without --lazy
        error = send(signed, eager, lazy=True)
        assert error["type"] == "SignatureError" and "lazy" in error["message"], error
        assert send(signed, eager, lazy=False)["type"] == "SignatureError"
        assert_at_base(signed, signed.before)
    finally:
        signed.faults()
    dry_run_ok(signed, load_bundle(V2, key=key, lazy=True), lazy=True)  # signed for --lazy: accepted


def test_fields_outside_the_signed_schema_are_refused(signed, key_path):
    good = load_bundle(V2, key=read_key(key_path))
    dry_run_ok(signed, good)
    with Client.connect(signed.pid) as client:                      # a future option nobody declared signed
        with pytest.raises(errors.RemoteError) as info:
            client.request("apply", bundle=good, lazy=None, timeout=10.0, dry_run=True, allow_stdlib=True)
    assert info.value.remote["type"] == "SignatureError" and "allow_stdlib" in info.value.remote["message"]
    for bundle in (dict(good, extra_hook="x"), dict(good, modules=[dict(good["modules"][0], prelude="x")])):
        error = send(signed, bundle)
        assert error["type"] == "SignatureError" and "not part of the signed schema" in error["message"], error
    assert_at_base(signed, signed.before)


def test_the_cli_refuses_a_key_file_others_can_read(tmp_path):
    path = tmp_path / "shared.key"
    path.write_text(secrets.token_hex(24))
    for mode in (0o644, 0o640, 0o604):
        os.chmod(path, mode)
        proc = dynupdate("check", V2, "--key-file", str(path))
        assert proc.returncode == 2, proc
        assert f"mode {mode:04o}" in proc.stderr and "chmod 600" in proc.stderr, proc.stderr
    os.chmod(path, 0o600)
    assert dynupdate("check", V2, "--key-file", str(path)).returncode == 0


def test_the_agent_refuses_a_key_file_others_can_read(start_target, tmp_path):
    path = tmp_path / "shared.key"
    path.write_text(secrets.token_hex(24))
    os.chmod(path, 0o644)
    rel = start_rel(start_target, "--items", "3", env=dict(os.environ, DYNUPDATE_KEY_FILE=str(path)))
    output = rel.target.output()
    assert "dynupdate agent failed to start" in output and "mode 0644" in output, output
    assert rel.get("/label") == {"label": "v1"}                    # the program runs on, without an agent
    proc = dynupdate("status", "--pid", str(rel.pid), "--no-inject", "--json")
    assert proc.returncode == 3, proc
