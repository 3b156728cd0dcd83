"""Patch bundles: load, validate, digest and sign them before anything is sent.

A bundle is a folder with `patch.toml` and the complete new source of each
module it replaces (see README, "Patch bundles"). Everything that can be
checked without the target is checked here, so a broken bundle never reaches
a live process; errors name the file and line.
"""
from __future__ import annotations

import os
import stat
from typing import Any, Dict, List, Optional, Tuple

from dynupdate_agent import refusals, signing, wire

from .errors import BundleError

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

MANIFEST = "patch.toml"
_KNOWN_KEYS = {"name", "version", "description", "requires", "lazy", "modules", "new_modules", "interpose"}
_BOM = "\ufeff"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def _check_inside(folder: str, rel: str, what: str) -> str:
    """The path of `rel` under `folder`, refusing any symlink on the way (nothing may lead outside)."""
    path = folder
    for part in rel.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise BundleError(f"{path}: missing ({what})") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: cannot be read ({what}): {exc}") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{path}: is a symbolic link ({what}); a bundle holds regular files only, "
                              f"copy the file into the bundle instead")
    return path


def read_regular_file(path: str, what: str, limit: int) -> bytes:
    """Read a regular file of at most `limit` bytes without following links and without blocking.

    A directory, fifo, socket or device in its place is refused before it is
    opened (so a fifo cannot hang us and /dev/zero cannot exhaust memory);
    the check is repeated on the opened descriptor, so swapping the file
    meanwhile does not help.
    """
    def refuse_kind(st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise BundleError(f"{path}: is a directory, but {what} must be a file")
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path}: is not a regular file ({what}); fifos, sockets and devices are refused")
        if st.st_size > limit:
            raise BundleError(f"{path}: {st.st_size} bytes ({what}) is over the limit of {limit} bytes "
                              f"({_mib(limit)})")
    try:
        refuse_kind(os.lstat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing ({what})") from None
    except BundleError:
        raise
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot be read ({what}): {getattr(exc, 'strerror', None) or exc}") from None
    try:
        refuse_kind(os.fstat(fd))
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BundleError(f"{path}: more than {limit} bytes ({what}); the limit is {_mib(limit)}")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({what}): {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _decode(data: bytes, path: str) -> str:
    """UTF-8 text, with or without a byte-order mark (the mark is dropped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc})") from None
    return text[1:] if text.startswith(_BOM) else text


def _read_manifest(folder: str) -> Tuple[str, Dict[str, Any]]:
    if not os.path.isdir(folder):
        raise BundleError(f"{folder}: not a folder; a bundle is a folder holding {MANIFEST} and sources")
    path = _check_inside(folder, MANIFEST, f"every bundle needs a {MANIFEST}")
    text = _decode(read_regular_file(path, "the manifest", wire.MAX_FILE_BYTES), path)
    try:
        return text, tomllib.loads(text)
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
    if not wire.is_module_name(name):
        raise BundleError(f"{manifest_path}: [modules] key {name!r} is not a dotted Python module name "
                          f"(identifiers joined by dots, e.g. \"shop.cart\")")
    if (not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\0" in rel
            or ".." in rel.replace("\\", "/").split("/")):
        raise BundleError(f"{manifest_path}: [modules] {name!r} must map to a relative path inside the bundle")
    path = _check_inside(folder, rel, f"named for module {name!r} in {MANIFEST}")
    data = read_regular_file(path, f"module {name!r}", wire.MAX_FILE_BYTES)
    source = _decode(data, path)
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BundleError(f"{path}:{exc.lineno}: {exc.msg} (module {name!r} does not compile)") from None
    except ValueError as exc:  # e.g. a NUL byte in the source
        raise BundleError(f"{path}: {exc} (module {name!r} does not compile)") from None
    return {"name": name, "file": rel, "source": source, "sha256": signing.digest(source.encode("utf-8"))}


def _load_interposers(folder: str, table: Any, manifest_path: str) -> List[Dict[str, Any]]:
    """`[interpose] "mod:Qual.name" = "file.py:function"` -> entries carrying the file's source and digest."""
    if not isinstance(table, dict):
        raise BundleError(f"{manifest_path}: [interpose] must be a table of \"module:qualname\" = \"file.py:function\"")
    out = []
    for target, spec in table.items():
        module, _, qualname = str(target).partition(":")
        if not wire.is_module_name(module) or not qualname or not all(p.isidentifier() for p in qualname.split(".")):
            raise BundleError(f"{manifest_path}: [interpose] key {target!r} must be MODULE:QUALNAME "
                              f"(e.g. \"shop.cart:Cart.checkout\")")
        rel, _, function = str(spec).rpartition(":")
        if not isinstance(spec, str) or not rel or not function.isidentifier():
            raise BundleError(f"{manifest_path}: [interpose] {target!r} must map to \"file.py:function\"")
        loaded = _load_module(folder, module, rel, manifest_path)  # same file rules as a module's source
        out.append({"target": target, "file": rel, "function": function, "source": loaded["source"],
                    "sha256": loaded["sha256"]})
    return out


def load_bundle(folder: str, *, key: Optional[bytes] = None, lazy: Optional[bool] = None,
                allow_stdlib: bool = False) -> Dict[str, Any]:
    """Validate the bundle in `folder` and return it in the form sent to the agent.

    With `key` the bundle is signed for an apply whose request-level options
    are `lazy` (None: the bundle's own default) and `allow_stdlib`; a target
    that requires signatures refuses the same bundle sent with other options.
    `allow_stdlib`: accept standard-library modules (see dynupdate_agent.refusals).
    """
    folder = os.path.realpath(folder)
    text, manifest = _read_manifest(folder)
    path = os.path.join(folder, MANIFEST)
    unknown = sorted(set(manifest) - _KNOWN_KEYS)
    if unknown:
        raise BundleError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KNOWN_KEYS))}")
    name = _require_str(manifest, "name", path, True)
    version = _require_str(manifest, "version", path, True)
    lazy_default = manifest.get("lazy", False)
    if not isinstance(lazy_default, bool):
        raise BundleError(f"{path}: `lazy` must be true or false")
    modules = manifest.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise BundleError(f"{path}: a [modules] table mapping module names to files is required")
    refused = refusals.first_refusal([str(mod) for mod in modules], allow_stdlib)
    if refused is not None:
        raise BundleError(f"{path}: {refused}")
    loaded = [_load_module(folder, mod, rel, path) for mod, rel in modules.items()]
    new_modules = manifest.get("new_modules", [])
    if not isinstance(new_modules, list) or any(m not in modules for m in new_modules):
        raise BundleError(f"{path}: `new_modules` must be a list of module names from [modules]")
    bundle = {
        "name": name,
        "version": version,
        "description": _require_str(manifest, "description", path, False) or "",
        "requires": _require_str(manifest, "requires", path, False),
        "lazy": lazy_default,
        "modules": loaded,
        "new_modules": list(new_modules),
        "manifest": text,
        **({"interpose": _load_interposers(folder, manifest["interpose"], path)} if "interpose" in manifest else {}),
        "signature": None,
    }
    try:
        wire.check_bundle(bundle)  # the agent's own checks, so a bundle that passes here is not refused there
    except wire.RequestError as exc:
        raise BundleError(f"{folder}: {exc.message}") from None
    if key is not None:
        # the client sends allow_stdlib only when it is true: absent and false are the same request
        bundle["signature"] = signing.sign(key, bundle, {"lazy": lazy, "allow_stdlib": True if allow_stdlib else None})
    return bundle


def read_key(path: str) -> bytes:
    """Read a signing key file (the same file the target was started with); 0600 or stricter."""
    try:
        return signing.read_key(path)
    except signing.KeyFileError as exc:
        raise BundleError(str(exc)) from None
