"""Bundle signatures: HMAC-SHA256 over a canonical encoding of every signed field.

Shared by the CLI (which signs with --key-file) and the agent (which verifies
with the key it was started with). The key itself never crosses the socket.

What is signed is decided by the schema in `wire` (fields marked `signed`):
the bundle's name, version, description, requires, lazy default, the
manifest's digest, every module's name, file and sha256 in the order sent, and
the request-level options that alter the outcome (`lazy`). They are encoded as
one canonical JSON document (sorted keys, no whitespace, ASCII only) behind a
scheme tag, so no value can be crafted to look like another field or another
module (a name holding a newline, an `=` or a digest changes the document, it
cannot add an entry), and dropping, adding or reordering a module changes it too.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from typing import Any, Dict, Optional

from . import wire

SCHEME = "dynupdate-bundle-signature/2"


class KeyFileError(Exception):
    """A signing key file that must not be used: unreadable, empty, or open to others."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_document(bundle: Dict[str, Any], options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The structure a signature covers (the bundle must have passed wire.check_bundle)."""
    options = options or {}
    fields: Dict[str, Any] = {}
    for name in wire.SIGNED_BUNDLE_FIELDS:
        if name == "modules":
            fields[name] = [{key: mod.get(key) for key in wire.SIGNED_MODULE_FIELDS} for mod in bundle["modules"]]
        elif name == "interpose":
            fields[name] = [{field.name: item.get(field.name) for field in wire.INTERPOSER if field.signed}
                            for item in bundle.get("interpose") or []]
        elif name == "manifest":
            fields["manifest_sha256"] = digest(bundle["manifest"].encode("utf-8", "surrogatepass"))
        else:
            fields[name] = bundle.get(name)
    fields.setdefault("lazy", False)
    if fields.get("lazy") is None:
        fields["lazy"] = False
    if fields.get("description") is None:
        fields["description"] = ""
    return {"scheme": SCHEME, "bundle": fields,
            "options": {name: options.get(name) for name in wire.SIGNED_OPTIONS}}


def canonical(document: Dict[str, Any]) -> bytes:
    """One byte string per document: sorted keys, no spaces, every non-ASCII character escaped."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign(key: bytes, bundle: Dict[str, Any], options: Optional[Dict[str, Any]] = None) -> str:
    return hmac.new(key, canonical(signed_document(bundle, options)), hashlib.sha256).hexdigest()


def verify(key: bytes, bundle: Dict[str, Any], options: Optional[Dict[str, Any]] = None) -> bool:
    signature = bundle.get("signature")
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(key, bundle, options), signature)


def checked_bundle(request: Dict[str, Any], key: Optional[bytes]) -> Dict[str, Any]:
    """The apply request's bundle, checked against the schema, its digests and (with a key) its signature.

    Raises wire.RequestError. A process that requires signatures accepts a
    request-level option (`lazy`) only if the signature covers its value, so
    such an option can never turn a refused signed bundle into an applied one.
    """
    wire.check_request(request)
    bundle = wire.check_bundle(request.get("bundle"))
    for mod in list(bundle["modules"]) + list(bundle.get("interpose") or []):
        actual = digest(mod["source"].encode("utf-8", "surrogatepass"))
        if actual != mod["sha256"]:
            raise wire.RequestError("DigestMismatch", f"{mod.get('name') or mod.get('file')!r}: sha256 of the "
                                    f"received source is {actual[:16]}…, the bundle says {mod['sha256'][:16]}…; the bundle was "
                                    f"altered in transit or on disk. Nothing was changed.")
    if key is not None:
        _refuse_unschemed(request, bundle)
        if bundle.get("signature") is None:
            raise wire.RequestError("SignatureError", "this process only accepts signed bundles; "
                                    "sign with `dynupdate apply --key-file KEY`")
        options = {name: request.get(name) for name in wire.SIGNED_OPTIONS}
        if not verify(key, bundle, options):
            raise wire.RequestError(
                "SignatureError", "the bundle's signature does not match this process's key (it covers the "
                f"bundle's fields, every module's name, file and digest, and the options "
                f"{', '.join(wire.SIGNED_OPTIONS)} = {options}); nothing was changed")
    return bundle


def _refuse_unschemed(request: Dict[str, Any], bundle: Dict[str, Any]) -> None:
    """A process that requires signatures acts on nothing the schema does not know.

    A field added to the request or the bundle without being declared in
    wire.REQUESTS / wire.BUNDLE / wire.MODULE (and so without a decision on
    whether it is signed) could change the outcome unsigned: refuse it.
    """
    known = {"type", "id"} | {f.name for f in wire.REQUESTS["apply"]}
    extra = sorted(map(str, set(request) - known))
    extra += sorted(f"bundle.{k}" for k in map(str, set(bundle) - {f.name for f in wire.BUNDLE}))
    module_fields = {f.name for f in wire.MODULE}
    for i, mod in enumerate(bundle["modules"]):
        extra += sorted(f"bundle.modules[{i}].{k}" for k in map(str, set(mod) - module_fields))
    if extra:
        raise wire.RequestError("SignatureError", f"this process only accepts signed bundles, and "
                                f"{', '.join(extra)} is not part of the signed schema (agent/wire.py); "
                                f"nothing was changed")


def read_key(path: str) -> bytes:
    """Read a signing key file, refusing one that group or others could read (like ssh does)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a fifo must not block us
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open the signing key file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: the signing key file is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path}: the signing key file has mode {mode:04o}; it must be readable by its "
                               f"owner only. Run `chmod 600 {path}`")
        if st.st_size > 64 * 1024:
            raise KeyFileError(f"{path}: the signing key file is {st.st_size} bytes; a key is at most 64 KiB")
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            key = fh.read(64 * 1024 + 1).strip()
    finally:
        if fd >= 0:
            os.close(fd)
    if not key:
        raise KeyFileError(f"{path}: the signing key file is empty")
    return key
