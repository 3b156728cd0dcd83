"""Issue 9, fuzzing (in-process): the signed-fields encoding of agent/signing.py.

Whatever the bundle, any change to any signed field — a bundle field, any
module's name, file or digest, adding, dropping or reordering a module, the
request-level `lazy` — changes the signature, and the canonical encoding is
injective: two different signed documents never encode to the same bytes (the
newline-in-a-name forgery of the old text encoding is one such collision).
"""
import copy

from hypothesis import example, given, settings, strategies as st

from dynupdate_agent import signing, wire

SETTINGS = settings(max_examples=200, deadline=None)
FEWER = settings(SETTINGS, max_examples=100)  # two bundles per example cost more
KEY = b"fuzz-key-0123456789abcdef"

text = st.text(max_size=12)
ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,6}){0,2}", fullmatch=True)
digest = st.binary(min_size=1, max_size=8).map(signing.digest)
module = st.fixed_dictionaries({"name": ident, "file": text, "sha256": digest, "source": text})
bundles = st.fixed_dictionaries({
    "name": text, "version": text, "description": text, "requires": st.none() | text, "lazy": st.booleans(),
    "manifest": text, "modules": st.lists(module, min_size=1, max_size=4, unique_by=lambda m: m["name"]),
})
options = st.fixed_dictionaries({"lazy": st.none() | st.booleans()})


def mutations(b):
    """Every signed place of bundle b, as functions that change it to a different value."""
    out = []
    for field in ("name", "version", "description", "manifest"):
        out.append(lambda x, f=field: x.__setitem__(f, x[f] + "!"))
    out.append(lambda x: x.__setitem__("requires", None if x["requires"] is not None else ""))
    out.append(lambda x: x.__setitem__("lazy", not x["lazy"]))
    for i in range(len(b["modules"])):
        for field in wire.SIGNED_MODULE_FIELDS:
            out.append(lambda x, i=i, f=field: x["modules"][i].__setitem__(
                f, x["modules"][i][f] + ("0" if f != "name" else "_x")))
        out.append(lambda x, i=i: x["modules"].pop(i) if len(x["modules"]) > 1 else x["modules"].append(
            dict(x["modules"][0], name=x["modules"][0]["name"] + "_copy")))
    if len(b["modules"]) > 1:
        out.append(lambda x: x["modules"].reverse())
    out.append(lambda x: x["modules"].append(dict(x["modules"][-1], name=x["modules"][-1]["name"] + "_new")))
    return out


@SETTINGS
@given(bundles, options, st.data())
def test_any_change_to_any_signed_field_invalidates_the_signature(b, opts, data):
    signed = dict(b, signature=signing.sign(KEY, b, opts))
    assert signing.verify(KEY, signed, opts)
    choices = mutations(b)
    mutate = data.draw(st.sampled_from(choices))
    altered = copy.deepcopy(signed)
    mutate(altered)
    if signing.signed_document(altered) == signing.signed_document(b):
        return  # e.g. reversing a list of identical entries: nothing signed changed
    assert not signing.verify(KEY, altered, opts)


@FEWER
@given(bundles, options, options)
def test_the_request_level_options_are_signed(b, opts, other):
    signed = dict(b, signature=signing.sign(KEY, b, opts))
    assert signing.verify(KEY, signed, other) == (opts == other)


@FEWER
@given(bundles, bundles, options, options)
@example({"name": "n", "version": "v", "description": "", "requires": None, "lazy": False, "manifest": "",
          "modules": [{"name": "a", "file": "", "sha256": "d1", "source": ""},
                      {"name": "b", "file": "", "sha256": "d2", "source": ""}]},
         {"name": "n", "version": "v", "description": "", "requires": None, "lazy": False, "manifest": "",
          "modules": [{"name": "a=d1\nb", "file": "", "sha256": "d2", "source": ""}]},
         {"lazy": None}, {"lazy": None})
def test_the_canonical_encoding_is_injective(a, b, opts_a, opts_b):
    doc_a, doc_b = signing.signed_document(a, opts_a), signing.signed_document(b, opts_b)
    if doc_a != doc_b:
        assert signing.canonical(doc_a) != signing.canonical(doc_b)
        assert signing.sign(KEY, a, opts_a) != signing.sign(KEY, b, opts_b)
