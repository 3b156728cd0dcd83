"""Issue 8 (structure) and 9: the request/reply schema is defined once, in agent/wire.py.

The published contract (README's JSON examples) must match the schema tables the
agent, the CLI and the tests use; the signature must cover exactly the fields the
schema marks as signed. Pure unit tests: no process.
"""
import json
import re
from pathlib import Path

import pytest

from dynupdate.cli import status_json, update_json
from dynupdate_agent import signing, wire

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
KEY = b"k" * 32


def readme_json(after: str) -> dict:
    """The first ```json block after the line containing `after`."""
    start = README.index(after)
    block = re.search(r"```json\n(.*?)```", README[start:], re.S)
    return json.loads(block.group(1))


def test_status_schema_matches_the_published_example():
    example = readme_json("`status --json`:")
    assert tuple(sorted(example)) == tuple(sorted(wire.STATUS_KEYS))
    assert sorted(example["history"][0]) == sorted(wire.HISTORY_KEYS)
    assert sorted(example["threads"][0]) == sorted(wire.THREAD_KEYS)
    assert sorted(example["factories"][0]) == sorted(wire.FACTORY_KEYS)
    assert sorted(example["tasks"][0]) == sorted(wire.TASK_KEYS)
    assert sorted(example["probes"][0]) == sorted(wire.PROBE_KEYS)
    assert sorted(example["agent"]) == sorted(wire.STATUS_AGENT_KEYS)
    assert status_json(dict(example, extra=1, agent=dict(example["agent"], secret="x"))) == example


def test_result_schema_matches_the_published_example():
    example = readme_json("`apply --json` and `rollback --json`")
    assert list(example) == list(wire.RESULT_KEYS)
    assert set(wire.UPDATED_KEYS) <= set(example["updated"])
    assert list(update_json(dict(example, extra=1), example["pid"])) == list(wire.RESULT_KEYS)


def test_ps_schema_matches_the_published_text():
    published = re.search(r"`ps --json` prints a list of `\{(.*?)\}`", README).group(1)
    assert tuple(k.strip().strip('"') for k in published.split(",")) == wire.PS_KEYS


def bundle():
    src = "X = 1\n"
    return {"name": "n", "version": "2", "description": "d", "requires": "base", "lazy": False,
            "manifest": "name = 'n'\n", "signature": None,
            "modules": [{"name": "a.b", "file": "b.py", "source": src, "sha256": signing.digest(src.encode())},
                        {"name": "a.c", "file": "c.py", "source": src, "sha256": signing.digest(src.encode())}]}


@pytest.mark.parametrize("field", wire.SIGNED_BUNDLE_FIELDS)
def test_every_signed_bundle_field_is_covered(field):
    b = bundle()
    signature = signing.sign(KEY, b)
    changed = dict(b)
    changed[field] = {"name": "m", "version": "3", "description": "e", "requires": None, "lazy": True,
                      "manifest": "x", "modules": b["modules"][:1], "new_modules": ["a.b"],
                      "interpose": [INTERPOSER]}[field]
    assert signing.sign(KEY, changed) != signature


INTERPOSER = {"target": "a.b:f", "file": "i.py", "function": "around", "source": "", "sha256": signing.digest(b"")}


@pytest.mark.parametrize("field", [f.name for f in wire.INTERPOSER if f.signed])
def test_every_signed_interposer_field_is_covered(field):
    b = dict(bundle(), interpose=[INTERPOSER])
    signature = signing.sign(KEY, b)
    b["interpose"] = [dict(INTERPOSER, **{field: "other"})]
    assert signing.sign(KEY, b) != signature


@pytest.mark.parametrize("field", wire.SIGNED_MODULE_FIELDS)
def test_every_signed_module_field_is_covered(field):
    b = bundle()
    signature = signing.sign(KEY, b)
    b["modules"][1] = dict(b["modules"][1], **{field: "other"})
    assert signing.sign(KEY, b) != signature


@pytest.mark.parametrize("option", wire.SIGNED_OPTIONS)
def test_every_signed_option_is_covered(option):
    b = bundle()
    values = {signing.sign(KEY, b, {option: v}) for v in (None, True, False)}
    assert len(values) == 3


def test_unsigned_fields_are_covered_through_the_signed_ones():
    # the source is covered by its signed sha256 (the agent checks the digest first)
    assert "source" not in wire.SIGNED_MODULE_FIELDS and "sha256" in wire.SIGNED_MODULE_FIELDS
    assert "signature" not in wire.SIGNED_BUNDLE_FIELDS


def test_the_agent_accepts_only_dotted_identifiers_as_module_names():
    for good in ("a", "a.b", "_x.y_2", "café.mod"):
        assert wire.is_module_name(good)
    for bad in ("", "a.", ".a", "a..b", "a\nb", "a=b", "1a", "a b", "a-b", None, 3):
        assert not wire.is_module_name(bad)
