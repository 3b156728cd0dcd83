"""Patch bundles: load, validate, digest and sign them before anything is sent.

A bundle is a folder with `patch.toml` and the complete new source of each
module it replaces (see README, "Patch bundles"). Everything that can be
checked without the target is checked here, so a broken bundle never reaches
a live process; errors name the file and line.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional

from dynupdate_agent import signing

from .errors import BundleError

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

MANIFEST = "patch.toml"
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KNOWN_KEYS = {"name", "version", "description", "requires", "lazy", "modules", "new_modules"}


def _read_manifest(folder: str) -> tuple:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise BundleError(f"{folder}: not a folder; a bundle is a folder holding {MANIFEST} and sources")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; every bundle needs a {MANIFEST}") from None
    try:
        text = raw.decode("utf-8")
        return text, tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{path}: invalid TOML: {exc}") from None


def _require_str(manifest: Dict[str, Any], key: str, path: str, required: bool) -> Optional[str]:
    value = manifest.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BundleError(f"{path}: `{key}` must be a non-empty string" + (" (required)" if required else ""))
    return value


def _load_module(folder: str, name: str, rel: Any, manifest_path: str) -> Dict[str, Any]:
    if not _MODULE_NAME.match(str(name)):
        raise BundleError(f"{manifest_path}: [modules] key {name!r} is not a dotted module name")
    if not isinstance(rel, str) or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise BundleError(f"{manifest_path}: [modules] {name!r} must map to a relative path inside the bundle")
    path = os.path.join(folder, rel)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (named for module {name!r} in {MANIFEST})") from None
    try:
        source = data.decode("utf-8")
        compile(source, path, "exec", dont_inherit=True)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc})") from None
    except SyntaxError as exc:
        raise BundleError(f"{path}:{exc.lineno}: {exc.msg} (module {name!r} does not compile)") from None
    return {"name": name, "file": rel, "source": source, "sha256": signing.digest(data)}


def load_bundle(folder: str, *, key: Optional[bytes] = None) -> Dict[str, Any]:
    """Validate the bundle in `folder` and return it in the form sent to the agent."""
    folder = os.path.abspath(folder)
    text, manifest = _read_manifest(folder)
    path = os.path.join(folder, MANIFEST)
    unknown = sorted(set(manifest) - _KNOWN_KEYS)
    if unknown:
        raise BundleError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KNOWN_KEYS))}")
    name = _require_str(manifest, "name", path, True)
    version = _require_str(manifest, "version", path, True)
    lazy = manifest.get("lazy", False)
    if not isinstance(lazy, bool):
        raise BundleError(f"{path}: `lazy` must be true or false")
    modules = manifest.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise BundleError(f"{path}: a [modules] table mapping module names to files is required")
    loaded = [_load_module(folder, mod, rel, path) for mod, rel in modules.items()]
    new_modules = manifest.get("new_modules", [])
    if not isinstance(new_modules, list) or any(m not in modules for m in new_modules):
        raise BundleError(f"{path}: `new_modules` must be a list of module names from [modules]")
    bundle = {
        "name": name,
        "version": version,
        "description": _require_str(manifest, "description", path, False) or "",
        "requires": _require_str(manifest, "requires", path, False),
        "lazy": lazy,
        "modules": loaded,
        "new_modules": list(new_modules),
        "manifest": text,
        "signature": None,
    }
    if key is not None:
        bundle["signature"] = signing.sign(key, text, {m["name"]: m["sha256"] for m in loaded},
                                           fields=signing.bundle_fields(bundle))
    return bundle


def read_key(path: str) -> bytes:
    """Read a signing key file (the same file the target was started with)."""
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the key file ({exc.strerror})") from None
    if not key:
        raise BundleError(f"{path}: the key file is empty")
    return key
