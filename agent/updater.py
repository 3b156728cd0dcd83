"""The update engine's orchestration: prepare, reach a safe point, swap, transfer.

apply:    validate -> prepare (compile, diff, find instances; target runs on)
          -> open a generation, interpose the mediator, wait for a safe point
          -> swap code -> transfer state (eager) or mark instances (lazy)
          -> record the version -> release held calls onto the new code.
rollback: the same steps with the recorded inverse operations and the
          rolled-back version's revert hooks.
Any failure before the version is recorded undoes everything already done and
releases held calls onto the old code: the process stays on its previous version.
"""
from __future__ import annotations

import functools
import threading
import time
import traceback
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import diff, factories, generations, history, instances, lazy, runtime, signing, wire
from .importer import BundleFinder, InstallFinder
from .mediator import Mediator
from .plan import Op, Plan, UpdateFunction
from .safepoint import SafePoint
from .server import Peer

_busy = threading.Lock()


class UpdateError(Exception):
    """A failure reported to the client as error type `kind`; nothing was changed."""

    def __init__(self, kind: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.tb = kind, message, tb


def _fail(kind: str, message: str, exc: Optional[BaseException] = None) -> UpdateError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) if exc else ""
    return UpdateError(kind, message, tb)


# --- request validation -------------------------------------------------------

def _check_type(value: Any, kind: Any, what: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in kinds)
        raise UpdateError("BadRequest", f"{what} must be {names}, got {type(value).__name__}")
    return value


def _timeout(request: Dict[str, Any]) -> float:
    value = float(_check_type(request.get("timeout", 10.0), (int, float), "timeout"))
    if not (0 <= value <= 86400):
        raise UpdateError("BadRequest", f"timeout must be between 0 and 86400 seconds, got {value!r}")
    return value


def _validate_bundle(bundle: Any) -> Dict[str, Any]:
    _check_type(bundle, dict, "bundle")
    for key in ("name", "version", "manifest"):
        _check_type(bundle.get(key), str, f"bundle.{key}")
    _check_type(bundle.get("requires"), str, "bundle.requires", optional=True)
    _check_type(bundle.get("lazy", False), bool, "bundle.lazy")
    modules = _check_type(bundle.get("modules"), list, "bundle.modules")
    if not modules:
        raise UpdateError("BadRequest", "bundle.modules is empty")
    names = [m.get("name") if isinstance(m, dict) else None for m in modules]
    if len(set(map(repr, names))) != len(names):
        raise UpdateError("BadRequest", "bundle.modules names a module twice")
    for i, mod in enumerate(modules):
        _check_type(mod, dict, f"bundle.modules[{i}]")
        for key in ("name", "source", "sha256"):
            _check_type(mod.get(key), str, f"bundle.modules[{i}].{key}")
        _check_type(mod.get("file", ""), str, f"bundle.modules[{i}].file")
        actual = signing.digest(mod["source"].encode("utf-8"))
        if actual != mod["sha256"]:
            raise UpdateError("DigestMismatch", f"module {mod['name']!r}: sha256 of the received source is "
                              f"{actual[:16]}…, the bundle says {mod['sha256'][:16]}…; the bundle was altered "
                              f"in transit or on disk. Nothing was changed.")
    key = runtime.signing_key()
    if key is not None:
        digests = {m["name"]: m["sha256"] for m in modules}
        if bundle.get("signature") is None:
            raise UpdateError("SignatureError", "this process only accepts signed bundles; "
                              "sign with `dynupdate apply --key-file KEY`")
        if not signing.verify(key, bundle["manifest"], digests, bundle.get("signature"),
                              fields=signing.bundle_fields(bundle)):
            raise UpdateError("SignatureError", "the bundle's signature does not match this process's key")
    return bundle


# --- the transaction shared by apply and rollback ------------------------------

class Transaction:
    """Everything one update changes, so that it can be undone as a whole."""

    def __init__(self, peer: Peer, phases: Dict[str, float]) -> None:
        self.peer = peer
        self.phases = phases
        self.plans: List[Plan] = []
        self.extra_ops: List[Op] = []
        self.transfers = instances.EagerTransfer()
        self.snapshots: List[Tuple[Any, Dict[str, Any]]] = []
        self.lazy_started: List[lazy.LazyClass] = []
        self.lazy_detached: List[lazy.LazyClass] = []
        self._phase_start = time.monotonic()
        self._phase = "prepare"

    def phase(self, name: str, message: str = "") -> None:
        now = time.monotonic()
        self.phases[self._phase] = self.phases.get(self._phase, 0.0) + (now - self._phase_start)
        self.send(wire.progress(name, message=message or name, done_phase=self._phase))
        self._phase, self._phase_start = name, now

    def finish_phase(self) -> None:
        now = time.monotonic()
        self.phases[self._phase] = self.phases.get(self._phase, 0.0) + (now - self._phase_start)
        self._phase_start = now

    def send(self, event: Dict[str, Any]) -> None:
        try:
            self.peer.send(event)
        except OSError:
            pass  # checked explicitly with alive() at the points that matter

    def require_client(self, where: str) -> None:
        if not self.peer.alive():
            raise UpdateError("ClientDisconnected", f"the client disconnected during {where}; "
                              f"the update was abandoned and nothing was changed")

    def snapshot(self, obj: Any) -> None:
        """Remember a module's or class's namespace to undo what hooks do to it."""
        self.snapshots.append((obj, dict(vars(obj))))

    def undo(self) -> None:
        """Reverse everything, newest first. Never raises: it is the last line of defence."""
        steps: List[Callable[[], None]] = [self.transfers.undo]
        steps += [lz.uninstall for lz in reversed(self.lazy_started)]
        steps += [lz.install for lz in reversed(self.lazy_detached)]
        steps += [op.undo for op in reversed(self.extra_ops)]
        steps += [plan.undo for plan in reversed(self.plans)]
        steps += [lambda o=o, s=s: _restore_namespace(o, s) for o, s in reversed(self.snapshots)]
        for step in steps:
            try:
                step()
            except Exception:
                runtime.log.exception("dynupdate agent: an undo step failed")


def _restore_namespace(obj: Any, saved: Dict[str, Any]) -> None:
    current = vars(obj)
    if isinstance(obj, types.ModuleType):
        current.clear()
        current.update(saved)
        return
    for name in [n for n in current if n not in saved and n not in ("__dict__", "__weakref__")]:
        delattr(obj, name)
    for name, value in saved.items():
        if name in ("__dict__", "__weakref__"):
            continue
        if current.get(name, diff.MISSING) is not value:
            setattr(obj, name, value)


def _wait_for_safe_point(tx: Transaction, mediated: List[types.FunctionType], module_dicts: List[dict],
                         timeout: float) -> Mediator:
    """Open a generation, interpose the mediator, and wait for quiescence."""
    generation = generations.advance()
    codes = {fn.__code__ for fn in mediated}
    point = SafePoint(codes, module_dicts, generation)
    mediator = Mediator(point.in_flight)
    mediator.install(mediated)
    tx.phase("safepoint", "waiting for a safe point")

    def tick(blocking: Dict[str, List[str]], elapsed: float) -> None:
        tx.require_client("the safe-point wait")
        waiting = [f"{thread}: {', '.join(reasons[:2])}" for thread, reasons in blocking.items()]
        tx.send(wire.progress("safepoint", waiting_on=waiting, held=mediator.held, elapsed=elapsed))

    try:
        blocking = point.wait(timeout, tick)
        if blocking is not None:
            names = "; ".join(f"{t}: {', '.join(r[:2])}" for t, r in list(blocking.items())[:5])
            raise UpdateError("SafePointTimeout", f"no safe point within {timeout:g}s; still running the old code: "
                              f"{names}. The update was abandoned; held calls continued on the old code.")
        tx.require_client("the safe-point wait")
    except BaseException:
        mediator.release()
        raise
    return mediator


def _functions_in(namespaces: List[Any]) -> List[types.FunctionType]:
    """Functions (and methods, properties' accessors) defined in modules/classes, to interpose."""
    out = []
    for ns in namespaces:
        d = vars(ns)
        for value in list(d.values()):
            parts = [value]
            if isinstance(value, (staticmethod, classmethod)):
                parts = [value.__func__]
            elif isinstance(value, property):
                parts = [value.fget, value.fset, value.fdel]
            for fn in parts:
                if isinstance(fn, types.FunctionType) and (not isinstance(ns, types.ModuleType)
                                                           or fn.__globals__ is d):
                    out.append(fn)
    return out


def _hook_clone(fn: Any, mediator: Mediator) -> Optional[types.FunctionType]:
    """A standalone copy of a hook function, immune to the swap changing the original."""
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return None
    code = mediator.real_code(fn)
    clone = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__kwdefaults__ = fn.__kwdefaults__
    return clone


# --- apply ---------------------------------------------------------------------

class _Undo:
    """What history keeps to roll an update back."""

    def __init__(self, modules: List[diff.ModulePlan], finder: Optional[BundleFinder]) -> None:
        self.plans = [mp.plan for mp in modules]
        self.classes = [pair.live for mp in modules for pair in mp.classes]
        self.modules = [mp.module for mp in modules if mp.module is not None]
        self.mediated = [fn for mp in modules for fn in mp.mediated]
        self.revert_hooks = [(mp.module, mp.revert_hook) for mp in modules
                             if mp.module is not None and mp.revert_hook is not None]
        self.finder = finder


def _apply(request: Dict[str, Any], peer: Peer) -> Dict[str, Any]:
    bundle = _validate_bundle(request.get("bundle"))
    timeout = _timeout(request)
    lazy_flag = _check_type(request.get("lazy"), bool, "lazy", optional=True)
    dry_run = bool(_check_type(request.get("dry_run", False), bool, "dry_run"))
    previous = history.current_version()
    phases: Dict[str, float] = {}
    tx = Transaction(peer, phases)
    result = {"pid": runtime.os.getpid(), "previous_version": previous, "version": previous, "phases": phases}
    if bundle.get("requires") is not None and bundle["requires"] != previous:
        raise UpdateError("RequirementNotMet", f"bundle {bundle['name']!r} requires version {bundle['requires']!r}, "
                          f"but the process runs {previous!r}; nothing was changed")
    tx.send(wire.progress("prepare", message=f"preparing {len(bundle['modules'])} module(s)"))
    pending = 0 if dry_run else lazy.finalize_all()
    modules = [_prepare_module(bundle, mod) for mod in bundle["modules"]]
    warnings = [w for mp in modules for w in mp.warnings]
    if pending:
        warnings.append(f"completed {pending} pending lazy transfer(s) of the previous update first")
    census, transfers = _plan_transfers(modules, bundle, lazy_flag)
    updated = {
        "functions": sum(mp.functions for mp in modules),
        "classes": sum(len(mp.classes) for mp in modules),
        "instances": sum(count for _, _, count, _ in transfers),
        "modules": [mp.name for mp in modules],
        "lazy_pending": sum(count for _, _, count, is_lazy in transfers if is_lazy),
        "new_modules": [mp.name for mp in modules if mp.installed_new],
    }
    result.update(updated=updated, warnings=warnings)
    if dry_run:
        tx.finish_phase()
        result.update(ok=True, dry_run=True, planned_version=bundle["version"],
                      plan=[repr(op) for mp in modules for op in mp.plan.ops][:500])
        return result
    mediated = [fn for mp in modules for fn in mp.mediated]
    module_dicts = [vars(mp.module) for mp in modules if mp.module is not None]
    mediator = _wait_for_safe_point(tx, mediated, module_dicts, timeout)
    try:
        finder = _swap(tx, modules)
        mediator.rearm(_functions_in([mp.module for mp in modules if mp.module is not None] +
                                     [pair.live for mp in modules for pair in mp.classes]))
        updated["instances"] = _transfer(tx, modules, transfers, census)
        tx.require_client("the state transfer")
        history.push(history.Entry(bundle["name"], bundle["version"], history.now(),
                                   summary=dict(updated), undo=_Undo(modules, finder)))
    except BaseException as exc:
        tx.undo()
        mediator.release()
        if isinstance(exc, UpdateError):
            raise
        raise _fail(type(exc).__name__, f"{type(exc).__name__}: {exc} (during {tx._phase}); every change was "
                    f"undone and the process runs {previous!r} as before", exc) from None
    mediator.release()
    tx.finish_phase()
    result.update(ok=True, version=bundle["version"])
    return result


def _prepare_module(bundle: Dict[str, Any], mod: Dict[str, Any]) -> diff.ModulePlan:
    filename = f"<dynupdate {bundle['name']}>/{mod.get('file') or mod['name'] + '.py'}"
    try:
        return diff.plan_module(mod["name"], mod["source"], filename)
    except diff.UnsupportedChange as exc:
        raise UpdateError("UnsupportedChange", f"module {mod['name']!r}: {exc}; nothing was changed") from None
    except SyntaxError as exc:
        raise _fail("CompileError", f"module {mod['name']!r} does not compile: {exc}", exc) from None
    except BaseException as exc:
        raise _fail("ModuleExecError", f"module {mod['name']!r} raised while executing its new source: "
                    f"{type(exc).__name__}: {exc}; nothing was changed", exc) from None


def _plan_transfers(modules: List[diff.ModulePlan], bundle: Dict[str, Any], lazy_flag: Optional[bool]
                    ) -> Tuple[instances.Census, List[Tuple[type, List[Any], int, bool]]]:
    """(live class, [], count at prepare, lazy?) for every updated class with a transfer hook,
    and the census that decides their instance sets at the safe point (`_transfer`).

    The census also covers classes the patch makes `updatable` (their factory is
    seeded with the instances that exist). It is closed when the request ends.
    """
    out: List[Tuple[type, List[Any], int, bool]] = []
    for mp in modules:
        for pair in (p for p in mp.classes if diff.TRANSFER in vars(p.new)):
            default = bundle.get("lazy", False)  # optional in a request: a missing key is not an error
            is_lazy = lazy_flag if lazy_flag is not None else bool(vars(pair.new).get(diff.LAZY, default))
            out.append((pair.live, [], 0, is_lazy))
    made_factories = [cls for mp in modules for cls in mp.new_factories]  # their instances seed the factory
    census = instances.Census([cls for cls, _, _, _ in out] + made_factories,
                              lazy=[cls for cls, _, _, is_lazy in out if is_lazy and cls not in made_factories])
    counts = census.prepare()
    return census, [(cls, objs, counts[cls], is_lazy) for cls, objs, _, is_lazy in out]


def _swap(tx: Transaction, modules: List[diff.ModulePlan]) -> Optional[BundleFinder]:
    tx.phase("swap", "swapping code")
    for mp in modules:
        if mp.module is not None:
            tx.snapshot(mp.module)
            for pair in mp.classes:
                tx.snapshot(pair.live)
    for mp in modules:
        tx.plans.append(mp.plan)
        mp.plan.apply()
    new = {mp.name: (mp.source, mp.namespace["__file__"])
           for mp in modules if mp.installed_new}
    finder = None
    if new:
        finder = BundleFinder(new)
        op = InstallFinder(finder)
        tx.extra_ops.append(op)
        op.apply()
    return finder


def _transfer(tx: Transaction, modules: List[diff.ModulePlan],
              transfers: List[Tuple[type, List[Any], int, bool]], census: instances.Census) -> int:
    """Decide the instance sets (the safe point is reached), transfer; returns the instance count."""
    decided = census.decide([cls for cls, _, _, is_lazy in transfers if not is_lazy])
    for cls in {cls: None for mp in modules for cls in mp.new_factories}:
        op = factories.Register(cls, functools.partial(census.known, cls))
        tx.extra_ops.append(op)
        op.apply()
    total = sum(len(decided[cls]) for cls, _, _, is_lazy in transfers if not is_lazy)
    tx.phase("transfer", f"transferring state of {total} instance(s)")
    done = 0
    counted = total
    for cls, objs, count, is_lazy in transfers:
        if is_lazy:
            if factories.is_updatable(cls):
                count = factories.count(cls)
                tx.lazy_started.append(lazy.start(cls, count))
            else:
                lz, count = lazy.start_decided(cls, census)
                tx.lazy_started.append(lz)
            counted += count
            continue
        objs = decided[cls]

        def progress(n: int, _total: int, base: int = done) -> None:
            tx.require_client("the state transfer")
            tx.send(wire.progress("transfer", done=base + n, total=total))

        try:
            done += tx.transfers.run(objs, lambda klass: getattr(klass, diff.TRANSFER), progress)
        except UpdateError:
            raise
        except BaseException as exc:
            n = len(tx.transfers.saved)
            raise _fail("TransferError", f"{cls.__qualname__}.{diff.TRANSFER} raised on instance {n} of "
                        f"{len(objs)}: {type(exc).__name__}: {exc}; every change was undone", exc) from None
    for mp in modules:
        if mp.module_hook is not None:
            old = next(saved for obj, saved in tx.snapshots if obj is mp.module)
            try:
                mp.module_hook(dict(old))
            except BaseException as exc:
                raise _fail("TransferError", f"module {mp.name!r}: {diff.TRANSFER}(old) raised "
                            f"{type(exc).__name__}: {exc}; every change was undone", exc) from None
    tx.send(wire.progress("transfer", done=total, total=total))
    return counted


# --- rollback ------------------------------------------------------------------

def _rollback(request: Dict[str, Any], peer: Peer) -> Dict[str, Any]:
    to = _check_type(request.get("to"), str, "to", optional=True)
    timeout = _timeout(request)
    entries = history.entries()
    previous = history.current_version()
    if not entries:
        raise UpdateError("NothingToRollBack", "nothing to roll back: the process runs its base version")
    if to is None:
        undo = entries[-1:]
    else:
        labels = [history.BASE_VERSION] + [e.version for e in entries]
        if to not in labels:
            raise UpdateError("UnknownVersion", f"version {to!r} is not in this process's history "
                              f"({', '.join(labels)})")
        index = len(labels) - 1 - labels[::-1].index(to)
        undo = entries[index:]
        if not undo:
            raise UpdateError("NothingToRollBack", f"the process already runs {to!r}")
    if any(e.undo is None for e in undo):
        raise UpdateError("HistoryTruncated", f"only the last {history.MAX_UNDO} updates can be rolled back")
    target_version = history.entries()[len(entries) - len(undo) - 1].version if len(undo) < len(entries) \
        else history.BASE_VERSION
    phases: Dict[str, float] = {}
    tx = Transaction(peer, phases)
    result = {"pid": runtime.os.getpid(), "previous_version": previous, "version": previous, "phases": phases}
    steps = list(reversed(undo))  # newest first
    classes = [cls for e in steps for cls in e.undo.classes]
    mediated = [fn for e in steps for fn in e.undo.mediated]
    module_dicts = [vars(m) for e in steps for m in e.undo.modules]
    updated = {"functions": sum(isinstance(op, UpdateFunction) for e in steps for p in e.undo.plans for op in p.ops),
               "classes": len(classes), "instances": 0,
               "modules": sorted({m.__name__ for e in steps for m in e.undo.modules})}
    result.update(updated=updated, warnings=[])
    mediator = _wait_for_safe_point(tx, mediated, module_dicts, timeout)
    try:
        tx.phase("swap", "restoring the previous code")
        pending_ids = _detach_lazy(tx, classes)
        for m in {id(m): m for e in steps for m in e.undo.modules}.values():
            tx.snapshot(m)
        for cls in {id(c): c for c in classes}.values():
            tx.snapshot(cls)
        for i, entry in enumerate(steps):  # lazily pending instances skip only the newest revert
            updated["instances"] += _undo_entry(tx, entry.undo, pending_ids if i == 0 else set(), mediator)
        tx.require_client("the rollback")
        for _ in steps:
            history.pop()
    except BaseException as exc:
        tx.undo()
        mediator.release()
        if isinstance(exc, UpdateError):
            raise
        raise _fail(type(exc).__name__, f"{type(exc).__name__}: {exc} (during {tx._phase} of the rollback); "
                    f"every change was undone and the process still runs {previous!r}", exc) from None
    mediator.release()
    tx.finish_phase()
    result.update(ok=True, version=target_version)
    return result


def _undo_entry(tx: Transaction, record: "_Undo", pending_ids: set, mediator: Mediator) -> int:
    """Roll one update back: capture its revert hooks, restore the code, run the hooks."""
    reverts: List[Tuple[Any, Any]] = []
    for cls in record.classes:
        hook = _hook_clone(vars(cls).get(diff.REVERT), mediator)
        if hook is not None:
            reverts.append((cls, hook))
    reverts.extend(("module", (mod, _hook_clone(fn, mediator))) for mod, fn in record.revert_hooks)
    for plan in reversed(record.plans):
        inverse = plan.inverse()
        tx.plans.append(inverse)
        inverse.apply()
    if record.finder is not None:
        op = InstallFinder(record.finder).inverse()
        tx.extra_ops.append(op)
        op.apply()
    mediator.rearm(_functions_in(record.modules + record.classes))
    return _run_reverts(tx, reverts, pending_ids)


def _detach_lazy(tx: Transaction, classes: List[type]) -> set:
    """Stop lazy transfers on the classes being rolled back; pending instances need no revert."""
    pending: set = set()
    for lz in lazy.active():
        if any(issubclass(lz.cls, c) or issubclass(c, lz.cls) for c in classes):
            pending.update(id(o) for o in lz.pending())
            lz.uninstall()
            tx.lazy_detached.append(lz)
    return pending


def _run_reverts(tx: Transaction, reverts: List[Tuple[Any, Any]], pending_ids: set) -> int:
    count = 0
    for owner, hook in reverts:
        if owner == "module":
            module, fn = hook
            try:
                fn(dict(vars(module)))
            except BaseException as exc:
                raise _fail("RevertError", f"module {module.__name__!r}: {diff.REVERT}(new) raised "
                            f"{type(exc).__name__}: {exc}; the rollback was undone", exc) from None
            continue
        objs = [o for o in instances.find([owner])[owner] if id(o) not in pending_ids]
        try:
            count += tx.transfers.run(objs, lambda klass, h=hook: h, lambda n, t: tx.require_client("the rollback"))
        except UpdateError:
            raise
        except BaseException as exc:
            raise _fail("RevertError", f"{owner.__qualname__}.{diff.REVERT} raised on instance "
                        f"{len(tx.transfers.saved)}: {type(exc).__name__}: {exc}; the rollback was undone",
                        exc) from None
    return count


# --- request handlers ------------------------------------------------------------

def _handle(work: Callable[[Dict[str, Any], Peer], Dict[str, Any]], request: Dict[str, Any],
            peer: Peer) -> Dict[str, Any]:
    if not _busy.acquire(blocking=False):
        return wire.error_reply("Busy", "busy: another update or rollback is running in this process; "
                                "wait for it to finish and try again",
                                version=history.current_version(), previous_version=history.current_version())
    try:
        with instances.scope():  # whatever happens, no census watch outlives the request
            return work(request, peer)
    except Exception as exc:
        if not isinstance(exc, UpdateError):
            exc = _fail(type(exc).__name__, f"{type(exc).__name__}: {exc}; nothing was changed", exc)
        current = history.current_version()
        return wire.error_reply(exc.kind, exc.message, exc.tb, pid=runtime.os.getpid(), version=current,
                                previous_version=current)
    finally:
        _busy.release()


def handle_apply(request: Dict[str, Any], peer: Peer) -> Dict[str, Any]:
    return _handle(_apply, request, peer)


def handle_rollback(request: Dict[str, Any], peer: Peer) -> Dict[str, Any]:
    return _handle(_rollback, request, peer)
