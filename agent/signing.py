"""Bundle signatures: HMAC-SHA256 over the manifest and every file's digest.

Shared by the CLI (which signs with --key-file) and the agent (which verifies
with the key it was started with). The key itself never crosses the socket.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Dict, Optional

#: the request fields the agent acts on besides the files; they are copies of manifest
#: entries, so the signature must cover them too or they could be altered on their own
FIELDS = ("name", "version", "requires", "lazy")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_fields(bundle: Dict[str, Any]) -> Dict[str, Any]:
    """The signed fields of a bundle as sent (a missing `lazy` counts as false)."""
    return {"name": bundle.get("name"), "version": bundle.get("version"), "requires": bundle.get("requires"),
            "lazy": bundle.get("lazy", False)}


def signed_message(manifest: str, file_digests: Dict[str, str], fields: Optional[Dict[str, Any]] = None) -> bytes:
    """The canonical bytes a signature covers: manifest digest, module=digest lines, @field=json lines."""
    lines = [digest(manifest.encode("utf-8"))]
    lines += [f"{name}={file_digests[name]}" for name in sorted(file_digests)]
    if fields is not None:
        lines += [f"@{key}={json.dumps(fields.get(key), sort_keys=True)}" for key in FIELDS]
    return "\n".join(lines).encode("utf-8")


def sign(key: bytes, manifest: str, file_digests: Dict[str, str], fields: Optional[Dict[str, Any]] = None) -> str:
    return hmac.new(key, signed_message(manifest, file_digests, fields), hashlib.sha256).hexdigest()


def verify(key: bytes, manifest: str, file_digests: Dict[str, str], signature: object,
           fields: Optional[Dict[str, Any]] = None) -> bool:
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(key, manifest, file_digests, fields), signature)
