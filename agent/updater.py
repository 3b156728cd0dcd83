"""The update engine's orchestration: prepare, reach a safe point, swap, transfer.

apply:    validate -> prepare (compile, diff, find instances; target runs on)
          -> open a generation, interpose the mediator, wait for a safe point
          -> swap code -> transfer state (eager) or mark instances (lazy)
          -> record the version -> release held calls onto the new code.
rollback: the same steps with the recorded inverse operations and the
          rolled-back version's revert hooks.
Any failure before the version is recorded undoes everything already done and
releases held calls onto the old code: the process stays on its previous version.
The guarantees (undo log, deadlines, the mediator's lifetime) live in
transaction.py; user code (module bodies, hooks) runs under its deadline there.
"""
from __future__ import annotations

import functools
import os
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import (
    callers,
    diff,
    factories,
    forking,
    generations,
    history,
    instances,
    interposers,
    lazy,
    probes,
    refusals,
    rehearsal,
    report,
    signing,
    sources,
    transaction,
    veto,
    watchdog,
    wire,
)
from .importer import BundleFinder, InstallFinder, prepare_restore
from .mediator import Mediator
from .plan import Plan, UpdateFunction
from .safepoint import SafePoint
from .server import Peer
from .transaction import Transaction, UpdateError
from .transaction import fail as _fail

__all__ = ["handle_apply", "handle_rollback", "Transaction", "UpdateError"]

_busy = threading.Lock()


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


def _hook_timeout(request: Dict[str, Any]) -> float:
    value = request.get("hook_timeout")
    if value is None:
        return transaction.DEFAULT_HOOK_TIMEOUT
    value = float(_check_type(value, (int, float), "hook_timeout"))
    if not (0.01 <= value <= 86400):
        raise UpdateError("BadRequest", f"hook_timeout must be between 0.01 and 86400 seconds, got {value!r}")
    return value


def _validate_bundle(request: Dict[str, Any], signing_key: Optional[bytes]) -> Dict[str, Any]:
    """The request's bundle, checked against the one schema (agent/wire.py) and this process's key."""
    try:
        return signing.checked_bundle(request, signing_key)
    except wire.RequestError as exc:
        raise UpdateError(exc.kind, exc.message) from None


# --- the safe point ----------------------------------------------------------------

def _wait_for_safe_point(tx: Transaction, mediated: List[types.FunctionType], module_dicts: List[dict],
                         timeout: float) -> Mediator:
    """Open a generation, interpose the mediator, and wait for quiescence."""
    generation = generations.advance()
    codes = {fn.__code__ for fn in mediated}
    point = SafePoint(codes, module_dicts, generation)
    mediator = Mediator(point.in_flight, on_release=point.resume_loops, confirm=point.check_loops,
                        deadline=tx.mediator_deadline(timeout))
    point.let_through = mediator.let_through  # held calls that old tasks await run on the old code
    mediator.install(mediated)
    forking.track(mediator)  # a fork from now on must not take the mediator along
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
                              f"{names}. The {tx.action} was abandoned; held calls continued on the old code.")
        tx.require_client("the safe-point wait")
        forking.enter_critical(tx)  # forks wait for the swap/transfer until forking.leave()
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

    def __init__(self, modules: List[diff.ModulePlan], finder: Optional[BundleFinder],
                 extra_plans: Optional[List[Plan]] = None) -> None:
        self.plans = [mp.plan for mp in modules] + list(extra_plans or [])
        self.classes = [pair.live for mp in modules for pair in mp.classes]
        self.modules = [mp.module for mp in modules if mp.module is not None]
        self.mediated = [fn for mp in modules for fn in mp.mediated]
        self.revert_hooks = [(mp.module, mp.revert_hook) for mp in modules
                             if mp.module is not None and mp.revert_hook is not None]
        self.finder = finder


def _apply(request: Dict[str, Any], peer: Peer, key: Optional[bytes] = None) -> Dict[str, Any]:
    bundle = _validate_bundle(request, key)
    timeout = _timeout(request)
    hook_timeout = _hook_timeout(request)
    allow_stdlib = bool(_check_type(request.get("allow_stdlib", False), bool, "allow_stdlib"))
    refused = refusals.first_refusal([m["name"] for m in bundle["modules"]], allow_stdlib)
    if refused is not None:
        raise UpdateError("RefusedModule", refused)
    lazy_flag = _check_type(request.get("lazy"), bool, "lazy", optional=True)
    dry_run = bool(_check_type(request.get("dry_run", False), bool, "dry_run"))
    previous = history.current_version()
    phases: Dict[str, float] = {}
    tx = Transaction(peer, phases, action="apply", label=bundle["name"], previous=previous,
                     hook_timeout=hook_timeout)
    result: Dict[str, Any] = {"pid": os.getpid(), "previous_version": previous, "version": previous,
                              "phases": phases}
    if bundle.get("requires") is not None and bundle["requires"] != previous:
        raise UpdateError("RequirementNotMet", f"bundle {bundle['name']!r} requires version {bundle['requires']!r}, "
                          f"but the process runs {previous!r}; nothing was changed")
    rehearse = _check_type(request.get("rehearse"), str, "rehearse", optional=True)
    if rehearse is not None:
        if rehearse not in ("first", "only"):
            raise UpdateError("BadRequest", f"rehearse must be 'first' or 'only', got {rehearse!r}")
        result["rehearsal"] = _rehearse(tx, request, timeout + 2 * hook_timeout)
        if rehearse == "only":
            tx.finish_phase()
            result.update(ok=True, rehearsal_only=True, planned_version=bundle["version"],
                          updated=result["rehearsal"]["result"].get("updated"), warnings=[])
            return result
    with transaction.current(tx):
        tx.send(wire.progress("prepare", message=f"preparing {len(bundle['modules'])} module(s)"))
        modules = tx.run_user_code(lambda: _prepare_modules(tx, bundle), "the new module bodies")
        tx.working_on = ("text", "the bundle's interposers")
        try:
            interposed = tx.run_user_code(functools.partial(interposers.prepare, bundle), "the bundle's interposers")
        except interposers.InterposeError as exc:
            raise _fail("InterposeError", f"{exc}; nothing was changed", exc.__cause__) from None
        warnings = [w for mp in modules for w in mp.warnings]
        pending = _finalize_pending(tx, [pair.live for mp in modules for pair in mp.classes], dry_run)
        if pending:
            verb = "will first complete" if dry_run else "completed"
            warnings.append(f"{verb} {pending} pending lazy transfer(s) of the previous update first")
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
        report.annotate(result, bundle, modules)  # warnings + plan summary; refuses unfindable modules
        if dry_run:
            _check_veto(tx, modules)
            tx.finish_phase()
            result.update(ok=True, dry_run=True, planned_version=bundle["version"],
                          callers_at_risk=callers.at_risk(modules, covered=interposed.targets),
                          plan=[repr(op) for mp in modules for op in mp.plan.ops][:500])
            return result
        mediated = [fn for mp in modules for fn in mp.mediated]
        module_dicts = [vars(mp.module) for mp in modules if mp.module is not None]
        mediator = _wait_for_safe_point(tx, mediated, module_dicts, timeout)
        with tx.swap_window(mediator):
            _check_veto(tx, modules)
            finder = _swap(tx, modules)
            interposed_plan = _interpose(tx, interposed)
            mediator.rearm(_functions_in([mp.module for mp in modules if mp.module is not None] +
                                         [pair.live for mp in modules for pair in mp.classes]))
            updated["instances"] = _transfer(tx, modules, transfers, census)
            tx.ready_to_commit("the state transfer")
            mediator.confirm()
            history.push(history.Entry(bundle["name"], bundle["version"], history.now(),
                                       summary=dict(updated), undo=_Undo(modules, finder, [interposed_plan])))
        tx.finish_phase()
    result.update(ok=True, version=bundle["version"])
    return result


def _rehearse(tx: Transaction, request: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """Run the whole update on a forked copy first; refuse the real one if the copy failed."""

    tx.send(wire.progress("rehearsal", message="rehearsing the update on a forked copy of the process"))
    child_request = {k: v for k, v in request.items() if k != "rehearse"}
    # the copy gets the safe-point and hook timeouts plus room for its transfers, then it is killed
    outcome = rehearsal.rehearse(child_request, timeout + 30.0, _apply, rehearsal.describe_error, forking.fork_copy)
    tx.send(wire.progress("rehearsal", message="rehearsal done", done_phase="rehearsal"))
    if not outcome.get("ok"):
        error = outcome.get("error") or {}
        raise UpdateError("RehearsalFailed", f"the rehearsal on a forked copy failed, so the process itself was "
                          f"not touched: {error.get('type')}: {error.get('message')}", error.get("traceback", ""))
    result = outcome.get("result") or {}
    return {"ok": True, "seconds": outcome.get("seconds"), "phases": result.get("phases"),
            "result": {"updated": result.get("updated"), "warnings": result.get("warnings")}}


def _check_veto(tx: Transaction, modules: List[diff.ModulePlan]) -> None:
    """Run the bundle's `__dynupdate_check__` hooks (old code still live); a veto changes nothing."""
    tx.working_on = ("text", "the bundle's __dynupdate_check__ hooks")
    try:
        tx.run_user_code(functools.partial(veto.check, modules), "the bundle's __dynupdate_check__ hooks")
    except veto.Vetoed as exc:
        raise UpdateError("Vetoed", f"{exc}; nothing was changed", exc.tb) from None


def _prepare_modules(tx: Transaction, bundle: Dict[str, Any]) -> List[diff.ModulePlan]:
    """Runs on a hook worker: the new module bodies are the target's own code."""
    out: List[diff.ModulePlan] = []
    for mod in bundle["modules"]:
        tx.working_on = ("text", f"the new body of module {mod['name']!r}")
        out.append(_prepare_module(bundle, mod))
    return out


def _prepare_module(bundle: Dict[str, Any], mod: Dict[str, Any]) -> diff.ModulePlan:
    filename = f"<dynupdate {bundle['name']}>/{mod.get('file') or mod['name'] + '.py'}"
    try:
        return diff.plan_module(mod["name"], mod["source"], filename)
    except diff.UnsupportedChange as exc:
        raise UpdateError("UnsupportedChange", f"module {mod['name']!r}: {exc}; nothing was changed") from None
    except SyntaxError as exc:
        raise _fail("CompileError", f"module {mod['name']!r} does not compile: {exc}", exc) from None
    except watchdog.Abandoned:
        raise
    except BaseException as exc:
        raise _fail("ModuleExecError", f"module {mod['name']!r} raised while executing its new source: "
                    f"{type(exc).__name__}: {exc}; nothing was changed", exc) from None


def _finalize_pending(tx: Transaction, touched: List[type], dry_run: bool) -> int:
    """Complete the previous update's pending lazy transfers of the classes this bundle touches.

    Only those: pending instances of other classes do not concern this update
    and keep waiting for their first use. A failing transfer is reported as
    what it is: the transfers completed before it stay done (as their first
    use would have done), nothing of this update was changed.
    """
    related = [lz for lz in lazy.active() if any(issubclass(lz.cls, c) or issubclass(c, lz.cls) for c in touched)]
    counts = [(lz, len(lz.pending())) for lz in related]
    if dry_run:
        for lz, count in counts:
            if count and lz.failures:
                raise UpdateError("PendingTransferFailed", f"apply would first complete {count} pending lazy "
                                  f"transfer(s) of {_name(lz.cls)} left by the previous update, and the last one "
                                  f"tried failed ({lz.last_error}); it would fail unless that hook now succeeds. "
                                  f"Nothing was changed")
        return sum(count for _, count in counts)
    done = 0

    def work() -> None:
        nonlocal done
        for lz in related:
            objs = lz.pending()
            for i, obj in enumerate(objs):
                tx.working_on = ("text", f"the pending lazy transfer ({diff.TRANSFER}) of {_name(lz.cls)} "
                                 f"instance {i + 1} of {len(objs)}, left by the previous update")
                lz.ensure(obj)
                done += 1
            lazy.maybe_close(lz)

    try:
        tx.run_user_code(work, "the pending lazy transfers")
    except lazy.LazyTransferError as exc:
        raise _fail("PendingTransferFailed", f"this bundle changes classes whose instances still have lazy "
                    f"transfers pending from the previous update, and completing them failed after {done} "
                    f"transfer(s): {exc}. The {done} completed transfer(s) stay done (as their first use would "
                    f"have done them); nothing of this update was changed. Fix or roll back the previous "
                    f"update first", exc) from None
    return done


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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


def _same_hook(hook: Callable[..., Any], klass: type) -> Callable[..., Any]:
    return hook


def _interpose(tx: Transaction, prepared: interposers.Prepared) -> Plan:
    """Install the bundle's interposers on the swapped code; undone with the update, removed by its rollback."""
    plan = Plan()
    tx.plans.append(plan)
    try:
        installed = prepared.install()
    except interposers.InterposeError as exc:
        raise UpdateError("InterposeError", str(exc)) from None
    plan.ops, plan._applied = installed.ops, installed._applied
    return plan


def _no_progress(done: int, total: int) -> None:
    """Progress and client checks run on the update's thread, by time (Transaction._poll)."""


def _transfer(tx: Transaction, modules: List[diff.ModulePlan],
              transfers: List[Tuple[type, List[Any], int, bool]], census: instances.Census) -> int:
    """Decide the instance sets (the safe point is reached), transfer; returns the instance count.

    The hooks (per instance, then module level) run on a hook worker under the hook deadline.
    """
    decided = census.decide([cls for cls, _, _, is_lazy in transfers if not is_lazy])
    for cls in {cls: None for mp in modules for cls in mp.new_factories}:
        op = factories.Register(cls, functools.partial(census.known, cls))
        tx.extra_ops.append(op)
        op.apply()
    total = sum(len(decided[cls]) for cls, _, _, is_lazy in transfers if not is_lazy)
    tx.phase("transfer", f"transferring state of {total} instance(s)")
    counted = total
    for cls, _, count, is_lazy in transfers:
        if not is_lazy:
            continue
        if factories.is_updatable(cls):
            count = factories.count(cls)
            tx.lazy_started.append(lazy.start(cls, count))
        else:
            lz, count = lazy.start_decided(cls, census)
            tx.lazy_started.append(lz)
        counted += count

    def work() -> None:
        for cls, _, _, is_lazy in transfers:
            if is_lazy:
                continue
            objs = decided[cls]
            base = len(tx.transfers.saved)
            tx.working_on = ("instances", cls, len(objs), diff.TRANSFER, base)
            try:
                tx.transfers.run(objs, lambda klass: getattr(klass, diff.TRANSFER), _no_progress)
            except (UpdateError, watchdog.Abandoned):
                raise
            except BaseException as exc:
                n = len(tx.transfers.saved) - base
                raise _fail("TransferError", f"{cls.__qualname__}.{diff.TRANSFER} raised on instance {n} of "
                            f"{len(objs)}: {type(exc).__name__}: {exc}", exc) from None
        for mp in modules:
            if mp.module_hook is not None:
                old = next(saved for obj, saved in tx.snapshots if obj is mp.module)
                tx.working_on = ("module", mp.module, diff.TRANSFER)
                try:
                    mp.module_hook(dict(old))
                except watchdog.Abandoned:
                    raise
                except BaseException as exc:
                    raise _fail("TransferError", f"module {mp.name!r}: {diff.TRANSFER}(old) raised "
                                f"{type(exc).__name__}: {exc}", exc) from None

    tx.run_user_code(work, "the state transfer")
    tx.send(wire.progress("transfer", done=total, total=total))
    return counted


# --- rollback ------------------------------------------------------------------

def _rollback(request: Dict[str, Any], peer: Peer, key: Optional[bytes] = None) -> Dict[str, Any]:
    to = _check_type(request.get("to"), str, "to", optional=True)
    timeout = _timeout(request)
    hook_timeout = _hook_timeout(request)
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
    tx = Transaction(peer, phases, action="rollback", label=f"to {target_version}", previous=previous,
                     hook_timeout=hook_timeout)
    result = {"pid": os.getpid(), "previous_version": previous, "version": previous, "phases": phases}
    steps = list(reversed(undo))  # newest first
    classes = [cls for e in steps for cls in e.undo.classes]
    mediated = [fn for e in steps for fn in e.undo.mediated]
    module_dicts = [vars(m) for e in steps for m in e.undo.modules]
    served = prepare_restore([e.undo.finder for e in steps])  # modules imported from a bundle meanwhile
    mediated += _functions_in(served)
    module_dicts += [vars(m) for m in served if isinstance(m, types.ModuleType)]
    functions = sum(isinstance(op, UpdateFunction) for e in steps for p in e.undo.plans for op in p.ops)
    updated: Dict[str, Any] = {"functions": functions, "classes": len(classes), "instances": 0,
                               "modules": sorted({m.__name__ for e in steps for m in e.undo.modules})}
    result.update(updated=updated, warnings=[])
    with transaction.current(tx):
        mediator = _wait_for_safe_point(tx, mediated, module_dicts, timeout)
        with tx.swap_window(mediator):
            tx.phase("swap", "restoring the previous code")
            pending_ids = _detach_lazy(tx, classes)
            for m in {id(m): m for e in steps for m in e.undo.modules}.values():
                tx.snapshot(m)
            for cls in {id(c): c for c in classes}.values():
                tx.snapshot(cls)
            for i, entry in enumerate(steps):  # lazily pending instances skip only the newest revert
                updated["instances"] += _undo_entry(tx, entry.undo, pending_ids if i == 0 else set(), mediator)
            tx.ready_to_commit("the rollback")
            mediator.confirm()
            for _ in steps:
                history.pop()
        for entry in undo:  # rolled back for good: its old code and its sources (linecache) can go now
            entry.undo = None
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
    """Run the rolled-back version's revert hooks on a hook worker, under the hook deadline."""

    def work() -> int:
        count = 0
        for owner, hook in reverts:
            if owner == "module":
                module, fn = hook
                tx.working_on = ("module", module, diff.REVERT)
                try:
                    fn(dict(vars(module)))
                except watchdog.Abandoned:
                    raise
                except BaseException as exc:
                    raise _fail("RevertError", f"module {module.__name__!r}: {diff.REVERT}(new) raised "
                                f"{type(exc).__name__}: {exc}", exc) from None
                continue
            objs = [o for o in instances.find([owner])[owner] if id(o) not in pending_ids]
            base = len(tx.transfers.saved)
            tx.working_on = ("instances", owner, len(objs), diff.REVERT, base)
            try:
                count += tx.transfers.run(objs, functools.partial(_same_hook, hook), _no_progress)
            except (UpdateError, watchdog.Abandoned):
                raise
            except BaseException as exc:
                raise _fail("RevertError", f"{owner.__qualname__}.{diff.REVERT} raised on instance "
                            f"{len(tx.transfers.saved) - base}: {type(exc).__name__}: {exc}", exc) from None
        return count

    return int(tx.run_user_code(work, "the revert hooks"))


# --- request handlers ------------------------------------------------------------

Work = Callable[[Dict[str, Any], Peer, Optional[bytes]], Dict[str, Any]]


def _refusal() -> Optional[Dict[str, Any]]:
    """Why a new update cannot start now, naming what holds it up (never a bare "busy")."""
    current = history.current_version()
    stuck = watchdog.stuck()
    if stuck:
        return wire.error_reply(
            "HookStuck", f"refused: code of an abandoned update has not returned yet: {stuck[0]}. That update "
            f"was undone and the process runs {current!r}; new updates are refused until that code returns, "
            f"so that what it does late can be undone first. If it never returns, restart the process",
            pid=os.getpid(), version=current, previous_version=current)
    running = transaction.status()["running"]
    detail = ""
    if running:
        doing = f", running {running['running']}" if running["running"] else ""
        detail = (f" ({running['action']} {running['bundle']!r}, phase {running['phase']}{doing}, "
                  f"for {running['seconds']:.1f}s)")
    return wire.error_reply("Busy", f"busy: another update or rollback is running in this process{detail}; "
                            f"wait for it to finish and try again", pid=os.getpid(), version=current,
                            previous_version=current)


def _handle(work: Work, request: Dict[str, Any], peer: Peer, key: Optional[bytes]) -> Dict[str, Any]:
    if watchdog.stuck():
        return _refusal() or {}
    if not _busy.acquire(blocking=False):
        return _refusal() or {}
    try:
        with instances.scope(), probes.detached():  # no census watch outlives the request; probes follow
            reply = work(request, peer, key)        # their targets to the new code afterwards
        sources.settle(keep=bool(reply.get("ok")) and not reply.get("dry_run"))
        return reply
    except Exception as exc:
        sources.settle(keep=False)  # a failed update's sources leave linecache with it
        if not isinstance(exc, UpdateError):
            exc = _fail(type(exc).__name__, f"{type(exc).__name__}: {exc}; nothing was changed", exc)
        current = history.current_version()
        return wire.error_reply(exc.kind, exc.message, exc.tb, pid=os.getpid(), version=current,
                                previous_version=current)
    finally:
        forking.leave()
        _busy.release()


def handle_apply(request: Dict[str, Any], peer: Peer, key: Optional[bytes] = None) -> Dict[str, Any]:
    """An `apply` request; `key` is the process's signing key (only signed bundles then)."""
    return _handle(_apply, request, peer, key)


def handle_rollback(request: Dict[str, Any], peer: Peer, key: Optional[bytes] = None) -> Dict[str, Any]:
    return _handle(_rollback, request, peer, key)
