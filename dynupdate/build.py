"""`dynupdate build`: a patch bundle from a source diff, with a compatibility report.

Like kpatch-build, the bundle is made from what changed between two versions of
the program's source (two git revisions, a revision and the working tree, or
two folders), and the report says up front what the engine will do and what
needs the author's attention — before anything reaches a live process:

- functions and methods changed, added, removed;
- classes whose ``__init__`` now sets attributes that existing instances lack,
  with no ``__dynupdate_transfer__`` (the classic ``AttributeError`` on old
  instances after an update);
- module-level values that changed but keep their live value;
- signatures that became incompatible with existing callers;
- changes the engine refuses (bases, ``__slots__``, metaclass).

The analysis reads the sources with `ast` only: no code of the program runs in
the CLI. The bundle is written to a temporary folder, validated with the same
loader as `dynupdate check`, and only then moved into place, so `build` never
leaves a bundle that `check` would reject.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from dynupdate_agent import callers

from .bundle import MANIFEST, load_bundle
from .errors import UsageError

TRANSFER = "__dynupdate_transfer__"
#: folders never taken as source (tooling, caches, virtual environments)
_SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
              "node_modules", "build", "dist", ".eggs"}


class BuildError(UsageError):
    """The revisions, folders or options given to `build` cannot make a bundle (exit 2)."""


# --- getting the two trees ---------------------------------------------------------------------

@dataclass
class Tree:
    """A snapshot of the program's source: relative path -> bytes."""

    label: str
    files: Dict[str, bytes]


def _walk_folder(folder: str) -> Dict[str, bytes]:
    out: Dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            with open(path, "rb") as fh:
                out[rel] = fh.read()
    return out


def _git(repo: str, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", repo, *args], capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise BuildError("git is not installed; give two folders instead of revisions") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"git {' '.join(args)} did not finish within 120 s") from None
    if done.returncode != 0:
        raise BuildError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def git_toplevel(path: str) -> str:
    return _git(path, "rev-parse", "--show-toplevel").decode().strip()


def tree_at_revision(repo: str, rev: str) -> Tree:
    """Every file of `rev` (as `git archive` gives it), read without touching the work tree."""
    data = _git(repo, "archive", "--format=tar", rev)
    files: Dict[str, bytes] = {}
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if any(p in _SKIP_DIRS for p in parts[:-1]):
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    files[member.name] = handle.read()
    short = _git(repo, "rev-parse", "--short", rev).decode().strip()
    return Tree(short, files)


def tree_of_worktree(repo: str) -> Tree:
    """Tracked and untracked-but-not-ignored files of the working tree, as they are now."""
    listing = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    files: Dict[str, bytes] = {}
    for rel in sorted(set(listing.decode("utf-8", "surrogateescape").split("\0")) - {""}):
        path = os.path.join(repo, rel)
        if os.path.islink(path) or not os.path.isfile(path):
            continue  # deleted in the work tree, or not a regular file
        with open(path, "rb") as fh:
            files[rel] = fh.read()
    head = _git(repo, "rev-parse", "--short", "HEAD").decode().strip()
    return Tree(f"{head}+wt", files)


def tree_of_folder(folder: str) -> Tree:
    if not os.path.isdir(folder):
        raise BuildError(f"{folder}: not a folder")
    return Tree(os.path.basename(os.path.abspath(folder)), _walk_folder(folder))


# --- module names ---------------------------------------------------------------------------------

def default_roots(files: Sequence[str]) -> List[str]:
    """`src/` layout if the tree has one, else the top of the tree (flat layout)."""
    return ["src"] if any(f.startswith("src/") and f.endswith(".py") for f in files) else ["."]


def module_name(path: str, roots: Sequence[str]) -> Optional[str]:
    """The name a program imports `path` by, or None when it lies outside every root."""
    if not path.endswith(".py"):
        return None
    for root in sorted(roots, key=len, reverse=True):
        prefix = "" if root in (".", "") else root.rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts)
    return None


# --- the compatibility report --------------------------------------------------------------------

@dataclass
class ModuleReport:
    """What an update of one module will do, and what needs the author's attention."""

    module: str
    file: str
    status: str  # "changed" or "added"
    changed: List[str] = field(default_factory=list)
    added: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    needs_transfer: List[Dict[str, Any]] = field(default_factory=list)
    values_kept: List[str] = field(default_factory=list)
    incompatible: List[Dict[str, str]] = field(default_factory=list)
    refused: List[Dict[str, str]] = field(default_factory=list)

    @property
    def needs_action(self) -> int:
        return len(self.needs_transfer) + len(self.values_kept) + len(self.incompatible) + len(self.refused)

    def as_json(self) -> Dict[str, Any]:
        return {"module": self.module, "file": self.file, "status": self.status,
                "functions": {"changed": self.changed, "added": self.added, "removed": self.removed},
                "needs_transfer": self.needs_transfer, "module_values_kept": self.values_kept,
                "incompatible_signatures": self.incompatible, "refused": self.refused,
                "needs_action": self.needs_action}


_FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)


def _dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def _functions(body: List[ast.stmt], prefix: str = "") -> Iterator[Tuple[str, ast.AST]]:
    """(qualname, node) of every function and method, classes nested included."""
    for node in body:
        if isinstance(node, _FuncNode):
            yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")


def _classes(body: List[ast.stmt], prefix: str = "") -> Iterator[Tuple[str, ast.ClassDef]]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield prefix + node.name, node
            yield from _classes(node.body, f"{prefix}{node.name}.")


def _module_values(tree: ast.Module) -> Dict[str, str]:
    """Module-level names bound by plain assignments, with their value expression."""
    out: Dict[str, str] = {}
    for node in tree.body:
        targets: List[ast.expr] = []
        value: Optional[ast.expr] = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and value is not None and not target.id.startswith("__"):
                out[target.id] = _dump(value)
    return out


def _self_attributes(cls: ast.ClassDef) -> List[str]:
    """Attributes `__init__` sets on self (`self.x = ...`, `self.x: T = ...`, `self.x += ...`)."""
    init = next((n for n in cls.body if isinstance(n, _FuncNode) and n.name == "__init__"), None)
    if init is None or not init.args.args:
        return []
    me = init.args.args[0].arg
    names: List[str] = []
    for node in ast.walk(init):
        targets: List[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == me
                        and sub.attr not in names):
                    names.append(sub.attr)
    return names


def _dataclass_fields(cls: ast.ClassDef) -> List[str]:
    """Fields of a `@dataclass` class: its annotated class-level names."""
    decorated = any((isinstance(d, ast.Name) and d.id == "dataclass") or
                    (isinstance(d, ast.Attribute) and d.attr == "dataclass") or
                    (isinstance(d, ast.Call) and _dump(d.func).find("dataclass") >= 0)
                    for d in cls.decorator_list)
    if not decorated:
        return []
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def _slots(cls: ast.ClassDef) -> Optional[str]:
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            return ast.unparse(node.value)
    return None


def _metaclass(cls: ast.ClassDef) -> Optional[str]:
    return next((ast.unparse(k.value) for k in cls.keywords if k.arg == "metaclass"), None)


def _params(a: ast.arguments) -> List[callers.Param]:
    """A parsed signature in the normalized form `callers.incompatibility` compares."""
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    out: List[callers.Param] = [(p.arg, callers.POSONLY if i < len(a.posonlyargs) else callers.POS,
                                 i >= first_default) for i, p in enumerate(positional)]
    if a.vararg is not None:
        out.append((a.vararg.arg, callers.VARARGS, False))
    out += [(p.arg, callers.KWONLY, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg is not None:
        out.append((a.kwarg.arg, callers.VARKW, False))
    return out


def _signature_problem(old: ast.arguments, new: ast.arguments) -> Optional[str]:
    """Why callers written for `old` may break on `new`, or None if every old call still works."""
    return callers.incompatibility(_params(old), _params(new))


def compare_module(name: str, file: str, old_src: Optional[str], new_src: str) -> ModuleReport:
    """The compatibility report for one module (old_src None: the module is new)."""
    new_tree = ast.parse(new_src)
    report = ModuleReport(name, file, "added" if old_src is None else "changed")
    new_funcs = dict(_functions(new_tree.body))
    if old_src is None:
        report.added = sorted(new_funcs)
        return report
    old_tree = ast.parse(old_src)
    old_funcs = dict(_functions(old_tree.body))
    report.added = sorted(set(new_funcs) - set(old_funcs))
    report.removed = sorted(set(old_funcs) - set(new_funcs))
    for qual in sorted(set(old_funcs) & set(new_funcs)):
        old_fn, new_fn = old_funcs[qual], new_funcs[qual]
        if _dump(old_fn) != _dump(new_fn):
            report.changed.append(qual)
        problem = _signature_problem(old_fn.args, new_fn.args)  # type: ignore[attr-defined]
        if problem:
            report.incompatible.append({"name": qual, "reason": problem})

    old_classes, new_classes = dict(_classes(old_tree.body)), dict(_classes(new_tree.body))
    for qual in sorted(set(old_classes) & set(new_classes)):
        old_cls, new_cls = old_classes[qual], new_classes[qual]
        old_bases = [ast.unparse(b) for b in old_cls.bases]
        new_bases = [ast.unparse(b) for b in new_cls.bases]
        if old_bases != new_bases:
            report.refused.append({"class": qual, "reason": f"bases changed from ({', '.join(old_bases)}) "
                                   f"to ({', '.join(new_bases)})"})
        if _slots(old_cls) != _slots(new_cls):
            report.refused.append({"class": qual, "reason": f"__slots__ changed from {_slots(old_cls)} "
                                   f"to {_slots(new_cls)}"})
        if _metaclass(old_cls) != _metaclass(new_cls):
            report.refused.append({"class": qual, "reason": f"metaclass changed from {_metaclass(old_cls)} "
                                   f"to {_metaclass(new_cls)}"})
        has_hook = any(isinstance(n, _FuncNode) and n.name == TRANSFER for n in new_cls.body)
        old_attrs = set(_self_attributes(old_cls)) | set(_dataclass_fields(old_cls))
        new_attrs = _self_attributes(new_cls) + [f for f in _dataclass_fields(new_cls)
                                                 if f not in _self_attributes(new_cls)]
        missing = [a for a in new_attrs if a not in old_attrs]
        if missing and not has_hook:
            report.needs_transfer.append({"class": qual, "attributes": missing})

    has_module_hook = any(isinstance(n, _FuncNode) and n.name == TRANSFER for n in new_tree.body)
    if not has_module_hook:
        old_values, new_values = _module_values(old_tree), _module_values(new_tree)
        report.values_kept = sorted(n for n in set(old_values) & set(new_values) if old_values[n] != new_values[n])
    return report


def stub_transfer(source: str, needs: List[Dict[str, Any]]) -> str:
    """Append a commented `__dynupdate_transfer__` skeleton to each class that needs one."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    classes = dict(_classes(tree.body))
    inserts: List[Tuple[int, List[str]]] = []
    for item in needs:
        cls = classes[item["class"]]
        indent = " " * (cls.body[0].col_offset if cls.body else cls.col_offset + 4)
        body = [f"{indent}# Added by `dynupdate build --stub-transfer`: existing instances lack "
                f"{', '.join(item['attributes'])}.\n",
                f"{indent}# Uncomment and complete it, or the update leaves them without these attributes.\n",
                f"{indent}# def {TRANSFER}(self, old):\n"]
        body += [f"{indent}#     self.{attr} = ...  # from old[...]\n" for attr in item["attributes"]]
        inserts.append((cls.end_lineno or len(lines), body))
    for end, body in sorted(inserts, reverse=True):
        if end > 0 and not lines[end - 1].endswith("\n"):
            lines[end - 1] += "\n"
        lines[end:end] = body
    return "".join(lines)


# --- the build itself -----------------------------------------------------------------------------

@dataclass
class BuildResult:
    bundle: Optional[str]
    name: str
    version: str
    requires: Optional[str]
    modules: List[ModuleReport]
    not_carried: List[Dict[str, str]]
    written: bool = False

    @property
    def needs_action(self) -> int:
        return sum(m.needs_action for m in self.modules)

    def as_json(self) -> Dict[str, Any]:
        return {"ok": True, "bundle": self.bundle, "written": self.written, "name": self.name,
                "version": self.version, "requires": self.requires,
                "modules": [m.as_json() for m in self.modules], "not_carried": self.not_carried,
                "needs_action": self.needs_action}


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BuildError(f"{path}: not UTF-8 ({exc})") from None


def plan_build(old: Tree, new: Tree, roots: Optional[Sequence[str]], name: str, version: str,
               requires: Optional[str]) -> Tuple[BuildResult, Dict[str, str]]:
    """Compare two trees: the report and the sources (module file -> text) the bundle carries."""
    roots = [os.path.normpath(r).replace(os.sep, "/") for r in roots] if roots else default_roots(list(new.files))
    reports: List[ModuleReport] = []
    sources: Dict[str, str] = {}
    not_carried: List[Dict[str, str]] = []
    for path in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(path), new.files.get(path)
        if before == after:
            continue
        if not path.endswith(".py"):
            what = "deleted" if after is None else "added" if before is None else "changed"
            reason = "C extension" if path.endswith((".so", ".pyd", ".c", ".pyx")) else "not Python source"
            not_carried.append({"path": path, "reason": f"{reason} ({what})"})
            continue
        mod = module_name(path, roots)
        if mod is None:
            not_carried.append({"path": path, "reason": f"outside every source root ({', '.join(roots)})"})
            continue
        if after is None:
            not_carried.append({"path": path, "reason": f"module {mod} deleted (a bundle cannot remove a module)"})
            continue
        new_src = _decode(path, after)
        old_src = None if before is None else _decode(path, before)
        try:
            reports.append(compare_module(mod, path, old_src, new_src))
        except SyntaxError as exc:
            raise BuildError(f"{path}:{exc.lineno}: {exc.msg} (module {mod} does not compile in {new.label})") from None
        sources[path] = new_src
    if not reports:
        raise BuildError(f"no Python module changed between {old.label} and {new.label} under "
                         f"{', '.join(roots)}; nothing to build")
    return BuildResult(None, name, version, requires, reports, not_carried), sources


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_bundle(result: BuildResult, sources: Dict[str, str], out: str, stub: bool) -> None:
    """Write the bundle to a temporary folder beside `out`, validate it, then move it into place."""
    out = os.path.abspath(out)
    if os.path.lexists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BuildError(f"{out}: already exists and is not an empty folder; choose another -o")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".dynupdate-build-", dir=parent)
    try:
        lines = [f"name = {_toml_string(result.name)}", f"version = {_toml_string(result.version)}"]
        if result.requires:
            lines.append(f"requires = {_toml_string(result.requires)}")
        lines += ["description = " + _toml_string(f"built by dynupdate build ({len(result.modules)} module(s))"),
                  "", "[modules]"]
        for report in result.modules:
            text = sources[report.file]
            if stub and report.needs_transfer:
                text = stub_transfer(text, report.needs_transfer)
            dest = os.path.join(tmp, report.file)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as fh:
                fh.write(text)
            lines.append(f"{_toml_string(report.module)} = {_toml_string(report.file)}")
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        load_bundle(tmp)  # the same validation as `dynupdate check`: never write what it would reject
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.bundle, result.written = out, True


def build(*, repo: Optional[str] = None, from_rev: Optional[str] = None, to_rev: Optional[str] = None,
          old_tree: Optional[str] = None, new_tree: Optional[str] = None, roots: Sequence[str] = (),
          name: Optional[str] = None, version: Optional[str] = None, requires: Optional[str] = None,
          out: Optional[str] = None, stub: bool = False, strict: bool = False) -> BuildResult:
    """Make a bundle from two git revisions (`from_rev`, `to_rev` or the work tree) or two folders.

    With `strict`, a report that needs action writes no bundle (the caller exits 1).
    """
    if old_tree is not None or new_tree is not None:
        if old_tree is None or new_tree is None or from_rev is not None:
            raise BuildError("give either --from REV [--to REV] in a git checkout, or OLD_TREE NEW_TREE")
        old, new = tree_of_folder(old_tree), tree_of_folder(new_tree)
        base_roots = [r for r in roots]
    else:
        if from_rev is None:
            raise BuildError("give --from REV (in a git checkout) or two folders OLD_TREE NEW_TREE")
        top = git_toplevel(repo or os.getcwd())
        old = tree_at_revision(top, from_rev)
        new = tree_at_revision(top, to_rev) if to_rev else tree_of_worktree(top)
        base_roots = [os.path.relpath(os.path.abspath(r), top) if os.path.isabs(r) or os.path.exists(r) else r
                      for r in roots]
    label_version = version or new.label
    result, sources = plan_build(old, new, base_roots, name or f"build-{label_version}", label_version, requires)
    if out is not None and not (strict and result.needs_action):
        write_bundle(result, sources, out, stub)
    return result
