"""Bundle signatures: HMAC-SHA256 over the manifest and every file's digest.

Shared by the CLI (which signs with --key-file) and the agent (which verifies
with the key it was started with). The key itself never crosses the socket.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Dict


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_message(manifest: str, file_digests: Dict[str, str]) -> bytes:
    """The canonical bytes a signature covers: manifest digest, then module=digest lines."""
    lines = [digest(manifest.encode("utf-8"))]
    lines += [f"{name}={file_digests[name]}" for name in sorted(file_digests)]
    return "\n".join(lines).encode("utf-8")


def sign(key: bytes, manifest: str, file_digests: Dict[str, str]) -> str:
    return hmac.new(key, signed_message(manifest, file_digests), hashlib.sha256).hexdigest()


def verify(key: bytes, manifest: str, file_digests: Dict[str, str], signature: object) -> bool:
    if not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(key, manifest, file_digests), signature)
