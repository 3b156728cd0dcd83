"""Live probes: log, count, time and capture calls of a running process, then vanish.

A probe is installed on one function (found by ``module:qualname``) through
`interpose`: the function object keeps its identity, so every existing
reference — from-imports, stored callbacks, bound methods — reaches the probe,
and removing it puts the exact code object back (zero cost afterwards).

Safety rules (a probe runs inside somebody's service):
- a probe never raises into the target: a template, condition or repr that
  fails is recorded on the probe and the call goes on unchanged; after
  `MAX_ERRORS` errors the probe disables itself;
- memory is bounded: `MAX_RECORDS` records per probe (a ring), reprs of at
  most `REPR_CHARS` characters, `REPR_ITEMS` items and `REPR_DEPTH` levels,
  `MAX_TIMINGS` latencies for the distribution, `MAX_PROBES` probes;
- log and capture records are rate limited (`--rate`, default 100/s), the
  rest counted as dropped; counters and timings are never limited;
- an update detaches every probe before it prepares and re-attaches each one
  to whatever its target is afterwards (see `detached`), so a probe survives
  an update or a rollback of its function.
"""
from __future__ import annotations

import difflib
import hashlib
import hmac
import inspect
import itertools
import json
import reprlib
import sys
import threading
import time
import types
from collections import deque
from contextlib import contextmanager
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from . import interpose

MAX_RECORDS = 1000
MAX_TIMINGS = 10000
MAX_ERRORS = 10
MAX_PROBES = 64
MAX_ENDED = 16
REPR_CHARS = 255
REPR_ITEMS = 100
REPR_DEPTH = 3
DEFAULT_RATE = 100.0
RETIRED_KEPT = 256

#: the fields of a probe specification; all of them are covered by a signature
SPEC_FIELDS = ("target", "log", "count", "time", "capture", "when", "rate", "duration")


class ProbeError(Exception):
    """A probe request that cannot be carried out; nothing was changed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def canonical(spec: Dict[str, Any]) -> bytes:
    """The bytes a probe signature covers: every spec field, in one canonical JSON encoding."""
    return json.dumps({k: spec.get(k) for k in SPEC_FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def sign(key: bytes, spec: Dict[str, Any]) -> str:
    return hmac.new(key, b"dynupdate-probe\0" + canonical(spec), hashlib.sha256).hexdigest()


_repr = reprlib.Repr()
_repr.maxlevel = REPR_DEPTH
_repr.maxstring = REPR_CHARS
_repr.maxother = REPR_CHARS
_repr.maxlong = REPR_CHARS
for _attr in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _attr, REPR_ITEMS)


def safe_repr(value: Any) -> str:
    """A bounded repr that never raises (a failing __repr__ is shown, not propagated)."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # noqa: BLE001 - a probe must never raise into the target
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS - 1] + "…"


# --- finding the target ----------------------------------------------------------------------

def _lookup(namespace: Any, name: str) -> Any:
    """`name` in a module or class namespace, without running descriptors (MRO for classes)."""
    if isinstance(namespace, type):
        for klass in namespace.__mro__:
            if name in vars(klass):
                return vars(klass)[name]
        raise KeyError(name)
    return vars(namespace)[name]


def _names(namespace: Any) -> List[str]:
    if isinstance(namespace, type):
        return sorted({n for k in namespace.__mro__ for n in vars(k)})
    return sorted(vars(namespace))


def resolve(target: str) -> types.FunctionType:
    """The function object behind ``module:qualname`` (methods, static/class methods, properties)."""
    module_name, sep, qualname = target.partition(":")
    if not sep or not module_name or not qualname:
        raise ProbeError("BadTarget", f"target {target!r} must be MODULE:QUALNAME, e.g. shop.cart:Cart.add")
    module = sys.modules.get(module_name)
    if module is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name == module_name:
            module = main
    if module is None:
        close = difflib.get_close_matches(module_name, [m for m in sys.modules if isinstance(m, str)], n=5)
        raise ProbeError("UnknownTarget", f"module {module_name!r} is not imported in this process"
                         + (f"; similar: {', '.join(close)}" if close else ""))
    obj: Any = module
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        if isinstance(obj, property) and part in ("fget", "fset", "fdel"):
            obj = getattr(obj, part)
            continue
        try:
            obj = _lookup(obj, part)
        except (KeyError, TypeError):
            where = f"{module_name}:{'.'.join(parts[:i])}" if i else module_name
            close = difflib.get_close_matches(part, _names(obj), n=5) if hasattr(obj, "__dict__") else []
            raise ProbeError("UnknownTarget", f"{where} has no {part!r}"
                             + (f"; similar: {', '.join(close)}" if close else "")) from None
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    if not isinstance(obj, types.FunctionType):
        raise ProbeError("NotProbeable", f"{target} is a {type(obj).__name__}, not a Python function; "
                         f"only functions and methods written in Python can be probed")
    try:
        interpose.kind_of(obj.__code__ if not _is_probed(obj) else _site_of(obj).original)
    except interpose.NotInterposable as exc:
        raise ProbeError("NotProbeable", f"{target}: {exc}") from None
    return obj


# --- probes and the sites they are installed on -----------------------------------------------

class Counter:
    """A counter that loses no increment under threads, at the cost of one C call.

    `probe.calls += 1` is three bytecodes that another thread can interleave;
    `next()` on an `itertools.count` is a single C call under the GIL.
    """

    __slots__ = ("_count", "incr")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.incr = self._count.__next__

    @property
    def value(self) -> int:
        return int(repr(self._count)[len("count("):-1])


class Probe:
    """One probe: what it records, its bounded buffers and counters."""

    def __init__(self, pid: str, spec: Dict[str, Any]) -> None:
        self.id = pid
        self.spec = spec
        self.target: str = spec["target"]
        self.template: Optional[str] = spec.get("log")
        self.count = bool(spec.get("count"))
        self.time = bool(spec.get("time"))
        self.capture = bool(spec.get("capture"))
        self.when_text: Optional[str] = spec.get("when")
        self.when = compile(self.when_text, "<probe --when>", "eval") if self.when_text else None
        self.rate = float(spec.get("rate") or DEFAULT_RATE)
        self.created_at = time.time()
        duration = spec.get("duration")
        self.expires_at = time.monotonic() + float(duration) if duration else None
        self.expires_wall = self.created_at + float(duration) if duration else None
        self.records: Deque[Dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.seq = 0
        self.timings: Deque[float] = deque(maxlen=MAX_TIMINGS)
        self.max_ms = 0.0
        self.calls, self.returns, self.exceptions = Counter(), Counter(), Counter()
        self.dropped = self.errors = 0
        self.last_error: Optional[str] = None
        self.state = "active"
        self.reason: Optional[str] = None
        self._tokens = self.rate
        self._refill = time.monotonic()
        self._lock = threading.Lock()

    @property
    def needs_names(self) -> bool:
        return self.template is not None or self.when is not None or self.capture

    def allow(self) -> bool:
        """Token bucket: at most `rate` log/capture records per second."""
        now = time.monotonic()
        with self._lock:
            self._tokens = min(self.rate, self._tokens + (now - self._refill) * self.rate)
            self._refill = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.dropped += 1
            return False

    def error(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{where}: {type(exc).__name__}: {exc}"[:REPR_CHARS]
            disable = self.errors >= MAX_ERRORS and self.state == "active"
            if disable:
                self.state, self.reason = "disabled", f"disabled after {self.errors} errors; last: {self.last_error}"
        if disable:
            _registry.retire_disabled()

    def add_record(self, record: Dict[str, Any]) -> None:
        with self._lock:
            self.seq += 1
            record["seq"] = self.seq
            self.records.append(record)

    def timing(self) -> Optional[Dict[str, Any]]:
        if not self.time:
            return None
        values = sorted(self.timings)
        if not values:
            return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))], 4)
        return {"count": len(values), "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99),
                "max_ms": round(self.max_ms, 4)}

    def describe(self) -> Dict[str, Any]:
        return {"id": self.id, "target": self.target, "log": self.template, "count": self.count,
                "time": self.time, "capture": self.capture, "when": self.when_text, "rate": self.rate,
                "state": self.state, "reason": self.reason, "created_at": self.created_at,
                "expires_at": self.expires_wall, "calls": self.calls.value, "returns": self.returns.value,
                "exceptions": self.exceptions.value, "dropped": self.dropped, "errors": self.errors,
                "last_error": self.last_error, "records_kept": len(self.records), "last_seq": self.seq,
                "timing": self.timing(),
                "limits": {"records": MAX_RECORDS, "repr_chars": REPR_CHARS, "repr_items": REPR_ITEMS,
                           "repr_depth": REPR_DEPTH, "timings": MAX_TIMINGS}}


class _Site:
    """A function with probes on it: its original code and a clone that runs it."""

    __slots__ = ("fn", "original", "clone", "forwarder", "kind", "probes", "signature", "active", "simple")

    def __init__(self, fn: types.FunctionType, key: int, dispatch: Any) -> None:
        self.fn = fn
        self.original = fn.__code__
        self.kind = interpose.kind_of(self.original)
        self.clone = interpose.original_clone(fn, self.original)
        self.forwarder = interpose.forwarder(self.original, dispatch, key)
        self.probes: List[Probe] = []
        self.signature: Optional[inspect.Signature] = None
        self.active: Tuple[Probe, ...] = ()
        self.simple = True

    def refresh(self) -> None:
        """Recompute what the fast path needs after a probe was added, removed or disabled."""
        self.active = tuple(p for p in self.probes if p.state == "active")
        self.simple = not any(p.needs_names for p in self.active)

    def call_simple(self, args: tuple, kwargs: dict) -> Any:
        """The fast path for plain functions whose probes only count and time."""
        probes = self.active
        for p in probes:
            p.calls.incr()
        started = _perf_counter()
        try:
            result = self.clone(*args, **kwargs)
        except BaseException:
            _tally(probes, started, False)
            raise
        duration_ms = (_perf_counter() - started) * 1000.0
        for p in probes:
            p.returns.incr()
            if p.time:
                p.timings.append(duration_ms)
                if duration_ms > p.max_ms:
                    p.max_ms = duration_ms
        return result

    def bind(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        if self.signature is None:
            self.signature = inspect.signature(self.clone)
        bound = self.signature.bind_partial(*args, **kwargs)
        return dict(bound.arguments)


_perf_counter = time.perf_counter


def _tally(probes: Tuple[Probe, ...], started: float, returned: bool) -> None:
    duration_ms = (_perf_counter() - started) * 1000.0
    for p in probes:
        (p.returns if returned else p.exceptions).incr()
        if p.time:
            p.timings.append(duration_ms)
            if duration_ms > p.max_ms:
                p.max_ms = duration_ms


def _context() -> Dict[str, Any]:
    out: Dict[str, Any] = {"thread": threading.current_thread().name, "task": None}
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is not None:
            out["task"] = task.get_name()
    return out


class _Dispatch:
    """What forwarders call: run the original code, let each probe observe the call."""

    def __init__(self) -> None:
        self.sites: Dict[int, _Site] = {}
        #: key -> clone of the original, for a call that entered a forwarder just before its
        #: site was taken away (bounded: the newest RETIRED_KEPT sites)
        self.retired: Dict[int, types.FunctionType] = {}

    def retire(self, key: int) -> None:
        site = self.sites.pop(key)
        self.retired[key] = site.clone
        while len(self.retired) > RETIRED_KEPT:
            del self.retired[next(iter(self.retired))]

    def __call__(self, key: int, args: tuple, kwargs: dict) -> Any:
        site = self.sites.get(key)
        if site is None:  # taken away while this call was on its way: run the original
            return self.retired[key](*args, **kwargs)
        if site.kind == interpose.PLAIN:
            if site.simple:
                return site.call_simple(args, kwargs)
            return self._plain(site, args, kwargs)
        if site.kind == interpose.COROUTINE:
            return self._coroutine(site, args, kwargs)
        return self._generator(site, args, kwargs)

    @staticmethod
    def _start(site: _Site) -> Tuple[Probe, ...]:
        active = site.active
        for p in active:
            p.calls.incr()
        return active

    def _plain(self, site: _Site, args: tuple, kwargs: dict) -> Any:
        active = self._start(site)
        capturing = [p for p in active if p.capture]
        started = time.perf_counter()
        local_vars: Optional[Dict[str, Any]] = None
        try:
            if capturing:
                result, local_vars = _call_capturing(site, args, kwargs)
            else:
                result = site.clone(*args, **kwargs)
        except BaseException as exc:
            _finish(site, active, args, kwargs, started, None, exc, local_vars)
            raise
        _finish(site, active, args, kwargs, started, result, None, local_vars)
        return result

    def _generator(self, site: _Site, args: tuple, kwargs: dict) -> Any:
        active = self._start(site)
        started = time.perf_counter()
        try:
            result = yield from site.clone(*args, **kwargs)
        except BaseException as exc:
            _finish(site, active, args, kwargs, started, None, exc, None)
            raise
        _finish(site, active, args, kwargs, started, result, None, None)
        return result

    async def _coroutine(self, site: _Site, args: tuple, kwargs: dict) -> Any:
        active = self._start(site)
        started = time.perf_counter()
        try:
            result = await site.clone(*args, **kwargs)
        except BaseException as exc:
            _finish(site, active, args, kwargs, started, None, exc, None)
            raise
        _finish(site, active, args, kwargs, started, result, None, None)
        return result


def _call_capturing(site: _Site, args: tuple, kwargs: dict) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """Run the call with a profile hook that keeps the locals of its frame as it returns or raises."""
    captured: Dict[str, Any] = {}
    me = sys._getframe()
    code = site.original
    previous = sys.getprofile()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code is code and frame.f_back is me:
            captured.update(frame.f_locals)

    sys.setprofile(hook)
    try:
        result = site.clone(*args, **kwargs)
    except BaseException as exc:
        sys.setprofile(previous)
        exc.__dynupdate_locals__ = dict(captured)  # type: ignore[attr-defined]
        raise
    sys.setprofile(previous)
    return result, captured


def _finish(site: _Site, probes: Tuple[Probe, ...], args: tuple, kwargs: dict, started: float, result: Any,
            exc: Optional[BaseException], local_vars: Optional[Dict[str, Any]]) -> None:
    """Let each probe record the call. Never raises: errors are the probe's, not the target's."""
    if not probes:
        return
    duration_ms = (time.perf_counter() - started) * 1000.0
    if exc is not None and local_vars is None:
        local_vars = getattr(exc, "__dynupdate_locals__", None)
    names: Optional[Dict[str, Any]] = None
    for probe in probes:
        try:
            (probe.returns if exc is None else probe.exceptions).incr()
            if probe.time:
                probe.timings.append(duration_ms)
                if duration_ms > probe.max_ms:
                    probe.max_ms = duration_ms
            if not probe.needs_names:
                continue
            if names is None:
                try:
                    names = site.bind(args, kwargs)
                except Exception as bind_exc:  # noqa: BLE001
                    probe.error("binding the arguments", bind_exc)
                    continue
                names.update(_context())
                names.update({"return": result, "result": result, "exception": exc, "duration_ms": duration_ms})
            if probe.when is not None:
                try:
                    if not eval(probe.when, {"__builtins__": __builtins__}, dict(names)):  # noqa: S307
                        continue
                except Exception as when_exc:  # noqa: BLE001
                    probe.error("--when", when_exc)
                    continue
            if not probe.allow():
                continue
            record: Dict[str, Any] = {"time": time.time(), "duration_ms": round(duration_ms, 4),
                                      "thread": names["thread"], "task": names["task"],
                                      "exception": None if exc is None else safe_repr(exc)}
            if probe.template is not None:
                try:
                    record["message"] = probe.template.format_map(names)[:4 * REPR_CHARS]
                except Exception as fmt_exc:  # noqa: BLE001
                    probe.error("--log template", fmt_exc)
                    continue
            if probe.capture:
                record["arguments"] = {k: safe_repr(v) for k, v in itertools.islice(
                    site.bind(args, kwargs).items(), REPR_ITEMS)}
                record["locals"] = ({k: safe_repr(v) for k, v in itertools.islice(local_vars.items(), REPR_ITEMS)}
                                    if local_vars is not None else None)
                record["return"] = safe_repr(result) if exc is None else None
            probe.add_record(record)
        except Exception as other:  # noqa: BLE001 - belt and braces: never into the target
            probe.error("recording", other)


# --- the registry ------------------------------------------------------------------------------

class Registry:
    """Every installed probe, the sites they sit on, and the probes that ended recently."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._dispatch = _Dispatch()
        self._keys = itertools.count(1)
        self._ids = itertools.count(1)
        self.probes: Dict[str, Probe] = {}
        self.ended: Deque[Probe] = deque(maxlen=MAX_ENDED)
        self._by_fn: Dict[int, int] = {}  # id(function) -> site key
        self._timer: Optional[threading.Thread] = None
        self._wake = threading.Condition(self._lock)
        self._detached = 0

    # sites
    def site_of(self, fn: types.FunctionType) -> Optional[_Site]:
        key = self._by_fn.get(id(fn))
        return self._dispatch.sites.get(key) if key is not None else None

    def _attach(self, probe: Probe, fn: types.FunctionType) -> None:
        site = self.site_of(fn)
        if site is None:
            key = next(self._keys)
            site = _Site(fn, key, self._dispatch)
            self._dispatch.sites[key] = site
            self._by_fn[id(fn)] = key
            fn.__code__ = site.forwarder
        site.probes.append(probe)
        site.refresh()

    def _detach(self, probe: Probe) -> None:
        for key, site in list(self._dispatch.sites.items()):
            if probe in site.probes:
                site.probes.remove(probe)
                site.refresh()
                if not site.probes:
                    if site.fn.__code__ is site.forwarder:
                        site.fn.__code__ = site.original
                    self._dispatch.retire(key)
                    self._by_fn.pop(id(site.fn), None)

    # probes
    def add(self, spec: Dict[str, Any]) -> Probe:
        with self._lock:
            if len(self.probes) >= MAX_PROBES:
                raise ProbeError("TooManyProbes", f"at most {MAX_PROBES} probes at once; remove some first")
            if self._detached:
                raise ProbeError("Busy", "an update is running in this process; add the probe when it is done")
            fn = resolve(spec["target"])
            try:
                probe = Probe(f"p{next(self._ids)}", spec)
            except SyntaxError as exc:
                raise ProbeError("BadProbe", f"--when does not compile: {exc.msg}") from None
            self._attach(probe, fn)
            self.probes[probe.id] = probe
            if probe.expires_at is not None:
                self._start_timer()
            return probe

    def _end(self, probe: Probe, state: str, reason: Optional[str]) -> None:
        self._detach(probe)
        self.probes.pop(probe.id, None)
        if probe.state == "active" or state != "disabled":
            probe.state = state
        probe.reason = probe.reason or reason
        self.ended.append(probe)

    def remove(self, ids: List[str]) -> List[str]:
        with self._lock:
            unknown = [i for i in ids if i not in self.probes]
            if unknown:
                raise ProbeError("UnknownProbe", f"no active probe {', '.join(unknown)}; "
                                 f"active: {', '.join(self.probes) or 'none'}")
            for i in ids:
                self._end(self.probes[i], "removed", "removed by request")
            return ids

    def remove_all(self) -> List[str]:
        with self._lock:
            return self.remove(list(self.probes))

    def retire_disabled(self) -> None:
        with self._lock:
            for probe in [p for p in self.probes.values() if p.state == "disabled"]:
                self._end(probe, "disabled", probe.reason)

    def get(self, pid: str) -> Probe:
        with self._lock:
            if pid in self.probes:
                return self.probes[pid]
            for probe in self.ended:
                if probe.id == pid:
                    return probe
        raise ProbeError("UnknownProbe", f"no probe {pid!r}; see `dynupdate probe list`")

    def listing(self) -> List[Dict[str, Any]]:
        with self._lock:
            self._expire()
            return [p.describe() for p in self.probes.values()] + [p.describe() for p in self.ended]

    def active(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [{"id": p.id, "target": p.target, "state": p.state} for p in self.probes.values()]

    # expiry
    def _expire(self) -> None:
        now = time.monotonic()
        for probe in [p for p in self.probes.values() if p.expires_at is not None and p.expires_at <= now]:
            self._end(probe, "expired", "its --for duration passed")

    def _start_timer(self) -> None:
        if self._timer is not None and self._timer.is_alive():
            self._wake.notify_all()
            return
        self._timer = threading.Thread(target=self._timer_loop, name="dynupdate-probes", daemon=True)
        self._timer.start()

    def _timer_loop(self) -> None:
        """Removes probes when their --for passes; exits as soon as no probe has an expiry."""
        with self._lock:
            while True:
                self._expire()
                pending = [p.expires_at for p in self.probes.values() if p.expires_at is not None]
                if not pending:
                    self._timer = None
                    return
                self._wake.wait(max(0.01, min(pending) - time.monotonic()))

    # updates
    @contextmanager
    def detached(self) -> Iterator[None]:
        """Take every probe off its function for an update; put each back on its target afterwards.

        The update then sees (and records for undo) only real code, and a probe
        follows its target to the new code — or back, after a rollback. A probe
        whose target no longer exists after the update ends, with that reason.
        """
        with self._lock:
            self._detached += 1
            for key, site in list(self._dispatch.sites.items()):
                if site.fn.__code__ is site.forwarder:
                    site.fn.__code__ = site.original
                self._dispatch.retire(key)
            self._by_fn.clear()
        try:
            yield
        finally:
            with self._lock:
                self._detached -= 1
                for probe in list(self.probes.values()):
                    try:
                        self._attach(probe, resolve(probe.target))
                    except ProbeError as exc:
                        self._end(probe, "disabled", f"its target is gone after an update: {exc.message}")


_registry = Registry()
_site_of = _registry.site_of


def _is_probed(fn: types.FunctionType) -> bool:
    return _registry.site_of(fn) is not None


def detached() -> Any:
    """Context manager for the updater: probes off during an update, back on afterwards."""
    return _registry.detached()


def active() -> List[Dict[str, Any]]:
    """Active probes, for `status`."""
    return _registry.active()


# --- the request handler -----------------------------------------------------------------------

def _check_spec(request: Dict[str, Any]) -> Dict[str, Any]:
    spec = request.get("probe")
    if not isinstance(spec, dict) or not isinstance(spec.get("target"), str):
        raise ProbeError("BadRequest", "probe must be a map with a string target")
    types_ = {"target": str, "log": str, "when": str, "count": bool, "time": bool, "capture": bool,
              "rate": (int, float), "duration": (int, float)}
    for key, value in spec.items():
        if key not in types_:
            raise ProbeError("BadRequest", f"unknown probe field {key!r}")
        if value is not None and (not isinstance(value, types_[key]) or
                                  (types_[key] != bool and isinstance(value, bool))):
            raise ProbeError("BadRequest", f"probe field {key!r} has the wrong type")
    if not any(spec.get(k) for k in ("log", "count", "time", "capture")):
        raise ProbeError("BadRequest", "a probe needs at least one of --log, --count, --time, --capture")
    if spec.get("rate") is not None and not 0 < spec["rate"] <= 100000:
        raise ProbeError("BadRequest", "--rate must be between 0 and 100000 records per second")
    if spec.get("duration") is not None and not 0 < spec["duration"] <= 7 * 86400:
        raise ProbeError("BadRequest", "--for must be between 0 and 7 days")
    return spec


def handle(request: Dict[str, Any], key: Optional[bytes]) -> Dict[str, Any]:
    """One `probe` request: add, list, show, remove. Raises ProbeError."""
    action = request.get("action")
    if action == "add":
        spec = _check_spec(request)
        if key is not None:
            signature = request.get("signature")
            if not isinstance(signature, str) or not hmac.compare_digest(signature, sign(key, spec)):
                raise ProbeError("SignatureError", "this process only accepts signed requests: a probe runs "
                                 "your expressions inside it; sign with `dynupdate probe add --key-file KEY`")
        probe = _registry.add(spec)
        return {"ok": True, "probe": probe.describe()}
    if action == "list":
        return {"ok": True, "probes": _registry.listing()}
    if action == "show":
        pid = request.get("probe_id")
        if not isinstance(pid, str):
            raise ProbeError("BadRequest", "show needs a probe id")
        since = request.get("since") or 0
        if not isinstance(since, int):
            raise ProbeError("BadRequest", "since must be an integer")
        probe = _registry.get(pid)
        with probe._lock:
            records = [dict(r) for r in probe.records if r["seq"] > since]
        return {"ok": True, "probe": probe.describe(), "records": records}
    if action == "remove":
        ids = request.get("ids")
        if ids == "all":
            return {"ok": True, "removed": _registry.remove_all()}
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
            raise ProbeError("BadRequest", "remove needs a list of probe ids, or \"all\"")
        return {"ok": True, "removed": _registry.remove(ids)}
    raise ProbeError("BadRequest", f"unknown probe action {action!r}; expected add, list, show or remove")
