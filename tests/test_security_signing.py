"""Issue 5, security: signed bundles.

A target started with a key (DYNUPDATE_KEY_FILE in its environment, or
`dynupdate_agent.start(key_file=...)`) accepts only bundles signed with that key
by `dynupdate apply --key-file` (HMAC-SHA256 over the manifest, every file's
digest and the fields the agent acts on: name, version, requires, lazy). An
unsigned or wrongly signed bundle is refused (exit 1) and nothing changes.
Without a key, behaviour is as before. The key never shows up: not in the
agent's log (DEBUG enabled), not in any reply, not in `status --json`.
"""
import json
import os
import secrets
import sys

import pytest

from conftest import TARGETS, dynupdate

sys.path.insert(0, str(TARGETS))
from rel_helpers import V2, assert_at_base, module_output, snapshot, start_module_target, start_rel  # noqa: E402,F401

from dynupdate import errors  # noqa: E402
from dynupdate.bundle import load_bundle  # noqa: E402
from dynupdate.client import Client  # noqa: E402

pytestmark = pytest.mark.usefixtures("module_output")


def write_key(folder, name: str) -> tuple:
    key = secrets.token_hex(24)
    path = os.path.join(folder, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
        fh.write(key + "\n")
    return path, key


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return {"good": write_key(folder, "good.key"), "wrong": write_key(folder, "wrong.key")}


@pytest.fixture(scope="module", params=["env", "start"])
def signed(request, start_module_target, keys):
    """A target that requires signatures: key from the environment, or passed to start()."""
    path, key = keys["good"]
    if request.param == "env":
        rel = start_rel(start_module_target, "--items", "20", "--debug-log", env={"DYNUPDATE_KEY_FILE": path})
    else:
        rel = start_rel(start_module_target, "--items", "20", "--debug-log", "--key-file", path, agent="start")
    rel.key = key
    rel.mode = request.param
    rel.before = snapshot(rel)
    seen = []

    def capture(text):
        seen.append(text)
        return text

    rel.seen = seen
    rel.capture = capture
    return rel


def cli(rel, *args):
    proc = dynupdate(*args)
    rel.capture(proc.stdout + proc.stderr)
    return proc


def test_hello_says_signatures_are_required(signed):
    with Client.connect(signed.pid) as client:
        hello = client.hello()
    signed.capture(json.dumps(hello))
    assert hello["signed_bundles_required"] is True


def test_unsigned_bundle_is_refused(signed):
    proc = cli(signed, "apply", "--pid", str(signed.pid), V2, "--json")
    assert proc.returncode == 1, proc
    data = json.loads(proc.stdout)
    assert data["error"]["type"] == "SignatureError" and "--key-file" in data["error"]["message"], data
    assert_at_base(signed, signed.before)


def test_wrongly_signed_bundle_is_refused(signed, keys):
    proc = cli(signed, "apply", "--pid", str(signed.pid), V2, "--key-file", keys["wrong"][0], "--json")
    assert proc.returncode == 1, proc
    data = json.loads(proc.stdout)
    assert data["error"]["type"] == "SignatureError" and "does not match" in data["error"]["message"], data
    assert_at_base(signed, signed.before)


@pytest.mark.parametrize("field,value", [("requires", None), ("version", "99"), ("name", "other"), ("lazy", True),
                                         ("manifest", "name = 'x'\n"), ("signature", 12345)])
def test_signed_bundle_altered_after_signing_is_refused(signed, keys, field, value):
    from dynupdate.bundle import read_key

    loaded = load_bundle(V2, key=read_key(keys["good"][0]))
    loaded[field] = value
    with Client.connect(signed.pid) as client:
        with pytest.raises(errors.RemoteError) as info:
            client.apply(loaded)
    signed.capture(json.dumps(info.value.remote) + json.dumps(info.value.result))
    assert info.value.remote["type"] in ("SignatureError", "BadRequest"), info.value.remote
    assert_at_base(signed, signed.before)


def test_altered_source_with_its_new_digest_is_refused(signed, keys):
    from dynupdate.bundle import read_key
    from dynupdate_agent import signing

    loaded = load_bundle(V2, key=read_key(keys["good"][0]))
    mod = loaded["modules"][0]
    mod["source"] = mod["source"].replace('return "v2"', 'return "evil"')
    mod["sha256"] = signing.digest(mod["source"].encode())
    with Client.connect(signed.pid) as client:
        with pytest.raises(errors.RemoteError) as info:
            client.apply(loaded)
    assert info.value.remote["type"] == "SignatureError", info.value.remote
    assert_at_base(signed, signed.before)


def test_correctly_signed_bundle_applies_and_rolls_back(signed, keys):
    proc = cli(signed, "apply", "--pid", str(signed.pid), V2, "--key-file", keys["good"][0], "--json")
    assert proc.returncode == 0, proc
    assert json.loads(proc.stdout)["version"] == "2"
    assert signed.get("/label") == {"label": "v2"} and signed.get("/item", iid="i3") == {"iid": "i3", "qty": 3}
    proc = cli(signed, "status", "--pid", str(signed.pid), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["version"] == "2"
    proc = cli(signed, "rollback", "--pid", str(signed.pid), "--json")   # rollback sends no code: no signature
    assert proc.returncode == 0, proc
    assert_at_base(signed, signed.before)


def test_the_key_never_shows(signed):
    with Client.connect(signed.pid) as client:
        replies = [client.hello(), client.status()]
    proc = cli(signed, "status", "--pid", str(signed.pid), "--json")
    texts = signed.seen + [json.dumps(r) for r in replies] + [proc.stdout, proc.stderr]
    output = signed.target.output()
    if signed.mode == "start":   # logging (DEBUG) was configured before start(): the agent's records are here
        assert "LOG dynupdate.agent DEBUG" in output, output
    for text in texts + [output]:
        assert signed.key not in text
        assert signed.key.encode().hex() not in text


def test_without_a_key_behaviour_is_as_before(start_target, keys):
    rel = start_rel(start_target, "--items", "5")
    with Client.connect(rel.pid) as client:
        assert client.hello()["signed_bundles_required"] is False
    code, data = rel.apply(V2)                                   # unsigned: accepted
    assert code == 0 and data["version"] == "2", data
    code, data = rel.rollback()
    assert code == 0, data
    proc = dynupdate("apply", "--pid", str(rel.pid), V2, "--key-file", keys["wrong"][0], "--json")
    assert proc.returncode == 0, proc                            # a signature is not needed, nor checked
    assert rel.get("/label") == {"label": "v2"}
