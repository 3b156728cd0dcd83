"""The instance set of an update: which live objects get their state transferred.

The set is decided at the safe point, completely (`Census`):
- instances of `updatable` classes come from the factory's weak list;
- for any other class the heap is scanned once while the target runs, in
  short slices that hand the GIL back between them (no client waits on one
  long scan), and a watch on the class's `__new__` (installed before the scan
  starts) records every instance created from then on, so nothing created
  during the scan or the safe-point wait is missed;
- an object whose `__init__` the mediator holds is not in the set: it is
  built by the new code once the update releases it, so it has no old state.
Objects created after the decision belong to the new version (lazy marks them
fresh). The watches are removed when the update ends, whatever the outcome.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import sys
import threading
import time
import types
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import factories, typeslots
from .mediator import MEDIATOR_FILE as _MEDIATOR_FILE

#: a scan slice runs at most this long before the scanning thread sleeps for REST_S, so a
#: request thread waiting for the GIL gets it within about a slice (the interpreter's own
#: switch interval is 5 ms, and a request needs the GIL several times). Every sleep costs
#: the scan a scheduler round trip (measured 3 ms on a loaded 2-core machine), so slices
#: are not made shorter than needed.
SLICE_S = 0.002
REST_S = 0.0002
CHUNK = 1000
AGENT_THREAD_PREFIX = "dynupdate-agent"  # as safepoint.AGENT_THREAD_PREFIX (which imports this module)


def _owners(classes: List[type]) -> Dict[type, List[type]]:
    owners: Dict[type, List[type]] = {}
    for cls in classes:
        for sub in typeslots.subclasses(cls):
            owners.setdefault(sub, []).append(cls)
    return owners


def scan_heap(classes: List[type], incremental: bool = False,
              sink: Optional[Callable[[type, Any], None]] = None) -> Dict[type, List[Any]]:
    """Every GC-tracked instance of `classes` (subclasses included), per class.

    Generation by generation, youngest first: a collection between two slices
    only moves objects to an older generation, which is scanned later, so an
    object alive throughout is seen at least once (duplicates are dropped).
    With `incremental`, the filtering runs in slices of SLICE_S separated by
    REST_S sleeps; the only long call left is `gc.get_objects(generation)`
    itself (about 1 ms per 10^5 objects). With `sink`, each hit goes to
    `sink(cls, obj)` (inside the slices) instead of into the returned lists.
    """
    owners = _owners(classes)
    result: Dict[type, List[Any]] = {cls: [] for cls in classes}
    if sink is None:
        def sink(cls: type, obj: Any) -> None:
            result[cls].append(obj)
    with _collector_paused(incremental):
        _scan(owners, sink, incremental)
    return result


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Automatic garbage collection off for the length of an incremental scan (or an eager
    transfer), as it was after.

    The list `gc.get_objects()` returns is itself a young object holding every object of the
    heap: a collection of the young generation in the middle of the scan walks all of it (17 ms
    at 10^5 instances, 52 ms at 10^6, measured), a pause for every thread. Collection resumes
    when the scan ends (the list is gone by then). Nothing is paused if the collector was
    off already; an application that turns it off during the pause finds it on afterwards
    (the two cannot be told apart). A transfer abandoned by the hook watchdog never reaches
    this `finally`: `scope()` (the end of the request) turns collection back on then.
    """
    if not pause or not gc.isenabled():
        yield
        return
    token = object()
    _paused.append(token)
    gc.disable()
    try:
        yield
    finally:
        if token in _paused:
            _paused.remove(token)
            if not gc.isenabled():
                gc.enable()


_paused: List[object] = []  #: pauses of automatic collection in effect (normally none or one)


def _scan(owners: Dict[type, List[type]], sink: Callable[[type, Any], None], incremental: bool) -> None:
    seen: set = set()
    generations: List[Optional[int]] = [0, 1, 2] if sys.version_info >= (3, 8) else [None]
    perf = time.perf_counter
    wanted = set(owners)
    for generation in generations:
        remember = generation is not None and generation < 2
        objs = gc.get_objects() if generation is None else gc.get_objects(generation=generation)
        if incremental and len(objs) > 10000:
            time.sleep(REST_S)  # that call was the one long hold: the filtering starts a fresh slice
        while objs:
            until = perf() + SLICE_S
            while objs and (not incremental or perf() < until):
                chunk = objs[-2000:]  # one allocation per 2000 objects: the scan itself triggers no collection
                del objs[-2000:]  # drop our references as we go, so the scan keeps nothing alive
                for obj in chunk:
                    if type(obj) in wanted and id(obj) not in seen:
                        if remember:  # only young hits can turn up again in an older generation
                            seen.add(id(obj))
                        for cls in owners[type(obj)]:
                            sink(cls, obj)
                del chunk
            if incremental and objs:
                time.sleep(REST_S)
        del objs


def find(classes: List[type], incremental: Optional[bool] = None) -> Dict[type, List[Any]]:
    """For each class, its live instances (subclass instances included), now.

    A heap scan is incremental (it sleeps between slices) in the agent's own
    threads, never in an application thread (a request must not sleep for us).
    """
    if incremental is None:
        incremental = threading.current_thread().name.startswith(AGENT_THREAD_PREFIX)
    result: Dict[type, List[Any]] = {}
    scan = []
    for cls in classes:
        if factories.is_updatable(cls):
            result[cls] = factories.live_instances(cls)
        else:
            scan.append(cls)
    if scan:
        result.update(scan_heap(scan, incremental=incremental))
    return result


class _Refs:
    """Weak references to objects, strong ones for objects that cannot be weakly referenced."""

    __slots__ = ("weak", "strong")

    def __init__(self) -> None:
        self.weak: List[Any] = []
        self.strong: List[Any] = []

    def add(self, obj: Any, ref: Any = weakref.ref) -> None:
        try:
            self.weak.append(ref(obj))
        except TypeError:
            self.strong.append(obj)

    def mark(self) -> Tuple[int, int]:
        return len(self.weak), len(self.strong)

    def __len__(self) -> int:
        return len(self.weak) + len(self.strong)

    def live(self, since: Tuple[int, int] = (0, 0), until: Optional[Tuple[int, int]] = None) -> List[Any]:
        weak = self.weak[since[0]:until[0] if until else None]
        strong = self.strong[since[1]:until[1] if until else None]
        out = [obj for obj in (r() for r in weak) if obj is not None]
        out.extend(strong)
        return out


class _Watch:
    """Records the instances of one class (and its subclasses) created while it is installed.

    It is the class's own `__new__` for the duration of an update. `factories`
    and `lazy` see through it (`_dynupdate_watch` = (wrapped __new__, what the
    class dict held before)), so whatever they install on top never depends
    on it; removing it only restores the class dict if it is still ours.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.refs = _Refs()
        self.active = True
        inner = cls.__new__
        nested = getattr(inner, "_dynupdate_watch", None)
        if nested is not None:  # never stack watches (two censuses on one class)
            inner = nested[0]
        watch, add = self, self.refs.add
        if inner is object.__new__:
            new_object = object.__new__

            def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
                obj: Any = new_object(klass)
                if watch.active:
                    add(obj)
                return obj
        else:
            def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
                obj = inner(klass, *args, **kwargs)
                if watch.active:
                    add(obj)
                return obj
        __new__.__qualname__ = f"{cls.__qualname__}.__new__"
        self.hook = typeslots.NewHook(cls, __new__)
        __new__._dynupdate_watch = (inner, self.hook)  # type: ignore[attr-defined]

    def remove(self) -> None:
        self.active = False  # if the hook must stay (see typeslots), it only passes through
        self.hook.remove()


def see_through(cls: type) -> "Tuple[Any, Optional[typeslots.NewHook]]":
    """(the `__new__` to build on, the census watch hook to supersede or None).

    Whoever installs a `__new__` on a class during an update (a new factory,
    lazy transfer) builds on what the watch wraps and takes over its removal,
    so removing the watch at the end never unhooks them, nor leaves it behind.
    """
    watched = getattr(cls.__new__, "_dynupdate_watch", None)
    if watched is not None and watched[1].cls is cls and watched[1].is_current():
        return watched[0], watched[1]
    return cls.__new__, None


def under_construction(classes: Tuple[type, ...]) -> set:
    """ids of objects whose `__init__` the mediator is holding right now.

    Such an object was allocated but its constructor waits for the update to
    end; it then runs the new `__init__`, so it has no old state to transfer.
    """
    ids = set()
    for top in sys._current_frames().values():
        frame: Optional[types.FrameType] = top
        while frame is not None:
            code = frame.f_code
            if code.co_filename == _MEDIATOR_FILE and code.co_name == "__init__":
                args = frame.f_locals.get("args") or ()
                if args and isinstance(args[0], classes):
                    ids.add(id(args[0]))
            frame = frame.f_back
    return ids


class Census:
    """Finds the instances an update transfers; `decide()` at the safe point, `close()` always.

    prepare():  watch untracked classes, then scan the heap for them (incremental)
    decide():   at the safe point: factory lists, scan results and watched
                creations, minus objects under construction -> objects per class
    close():    remove the watches (also on failure: see `scope`)
    """

    def __init__(self, classes: List[type], lazy: Iterable[type] = ()) -> None:
        """`lazy`: classes whose transfer will be lazy (the census only counts their instances)."""
        self.classes = list(dict.fromkeys(classes))
        self.untracked = [cls for cls in self.classes if not factories.is_updatable(cls)]
        self.lazy = set(lazy) & set(self.untracked)
        #: lazy classes: how many instances the scan found (lazy needs no more)
        self.scanned_count: Dict[type, int] = {cls: 0 for cls in self.lazy}
        self.watches: List[_Watch] = []
        #: what the scan found, held strongly until the census closes (the end of the request),
        #: in lists of at most CHUNK objects: a weak reference per hit would bring a full
        #: collection forward in a large heap, and one big young list would be walked whole
        #: by every collection of the young generation until it grows old
        self.scanned: Dict[type, List[List[Any]]] = {}
        self.marks: Dict[int, Tuple[int, int]] = {}
        self.closed = False
        _open.append(self)

    def prepare(self) -> Dict[type, int]:
        """Install the watches, then scan; returns a first count per class (for the plan)."""
        for cls in self.untracked:
            for klass in typeslots.subclasses(cls):
                if klass is cls or "__new__" in vars(klass):
                    try:
                        self.watches.append(_Watch(klass))
                    except TypeError:
                        pass  # a built-in type's __new__ cannot be replaced: the scan still finds them
        for cls in self.untracked:
            if cls not in self.lazy:
                self.scanned[cls] = [[]]

        def sink(cls: type, obj: Any) -> None:
            if cls in self.scanned_count:
                self.scanned_count[cls] += 1
                return
            chunks = self.scanned[cls]
            if len(chunks[-1]) >= CHUNK:
                chunks.append([])
            chunks[-1].append(obj)

        if self.untracked:
            scan_heap(self.untracked, incremental=True, sink=sink)
        return {cls: self._scanned_count(cls) for cls in self.classes}

    def _scanned_count(self, cls: type) -> int:
        if cls in self.scanned_count:
            return self.scanned_count[cls]
        if cls in self.scanned:
            return sum(map(len, self.scanned[cls]))
        return factories.count(cls)

    def _scanned(self, cls: type) -> List[Any]:
        return list(itertools.chain.from_iterable(self.scanned.get(cls, ())))

    def _watched(self, cls: type, since: bool = False) -> List[Any]:
        out: List[Any] = []
        for watch in self.watches:
            if issubclass(watch.cls, cls) or issubclass(cls, watch.cls):
                start = self.marks.get(id(watch), (0, 0)) if since else (0, 0)
                out.extend(obj for obj in watch.refs.live(start) if isinstance(obj, cls))
        return out

    def _unscanned(self, cls: type, scanned: Optional[List[Any]] = None) -> List[Any]:
        """Instances the watches saw that the scan did not (created after it passed)."""
        watched = {id(obj): obj for obj in self._watched(cls)}
        if watched:
            for obj in self._scanned(cls) if scanned is None else scanned:
                watched.pop(id(obj), None)
        return list(watched.values())

    def _mark(self) -> None:
        for watch in self.watches:
            self.marks[id(watch)] = watch.refs.mark()

    def decide(self, classes: List[type]) -> Dict[type, List[Any]]:
        """The complete instance set of each class, now (call at the safe point)."""
        self._mark()
        building = under_construction(tuple(classes)) if classes else set()
        out: Dict[type, List[Any]] = {}
        for cls in classes:
            if cls in self.scanned:
                objs = self._scanned(cls)
                objs += self._unscanned(cls, objs)
            else:
                objs = factories.live_instances(cls)
            out[cls] = [obj for obj in objs if id(obj) not in building] if building else objs
        return out

    def decide_lazy(self, cls: type) -> Tuple[int, List[Any]]:
        """For a lazy transfer of a class that is no factory, at the safe point, without walking
        the instances: (how many are in the set, objects that are not: under construction).

        The set itself is "every instance not marked fresh"; lazy finds the pending ones by
        scanning the heap when it must (`status`, closing), as the scan found them here.
        """
        self._mark()
        # an instance created while the scan ran may be counted twice: the count only tells lazy
        # when to check (exactly, by a scan) whether anything is still pending
        count = self.scanned_count[cls] + len(self._watched(cls))
        held = under_construction((cls,))
        building = [obj for obj in self._watched(cls) if id(obj) in held] if held else []
        return count - len(building), building

    def known(self, cls: type) -> List[Any]:
        """Every live instance of `cls` the census knows of (none excluded), without duplicates."""
        objs = self._scanned(cls)
        objs += self._watched(cls)
        return list({id(obj): obj for obj in objs if isinstance(obj, cls)}.values())

    def created_since_decided(self, cls: type) -> List[Any]:
        """Instances of `cls` the watches saw after the decision (they belong to the new version)."""
        return self._watched(cls, since=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for watch in reversed(self.watches):
            watch.remove()
        self.watches.clear()
        self.scanned.clear()
        self.scanned_count.clear()
        if self in _open:
            _open.remove(self)


_open: List[Census] = []


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Every census opened inside is closed on the way out, whatever happened, and automatic
    collection is on again if a transfer paused it and never came back."""
    before = len(_open)
    try:
        yield
    finally:
        for census in list(_open[before:]):
            census.close()
        if _paused:  # a pause whose owner was abandoned (a hung hook on a worker thread)
            _paused.clear()
            if not gc.isenabled():
                gc.enable()


_slot_cache: "Dict[type, Tuple[str, ...]]" = {}


def _slot_names(cls: type) -> Tuple[str, ...]:
    cached = _slot_cache.get(cls)
    if cached is None:
        cached = _slot_cache[cls] = _compute_slot_names(cls)
    return cached


def _compute_slot_names(cls: type) -> Tuple[str, ...]:
    names: List[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.extend(s for s in slots if s not in ("__dict__", "__weakref__"))
    return tuple(names)


def state_of(obj: Any) -> Dict[str, Any]:
    """A shallow copy of the instance's attributes (its __dict__ and slot values)."""
    try:  # never through the class's own __getattribute__ (lazy transfer hooks live there)
        state = dict(object.__getattribute__(obj, "__dict__"))
    except AttributeError:
        state = {}
    slots = _slot_names(type(obj))
    if not slots:
        return state
    for name in slots:
        try:
            state[name] = object.__getattribute__(obj, name)
        except AttributeError:
            pass
    return state


def restore_state(obj: Any, state: Dict[str, Any]) -> None:
    """Put an instance's attributes back exactly as `state_of` saw them."""
    slots = _slot_names(type(obj))
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        d = None
    if d is not None:
        d.clear()
        d.update({k: v for k, v in state.items() if k not in slots})
    for name in slots:
        if name in state:
            object.__setattr__(obj, name, state[name])
        else:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass


def _dict_reader(cls: type) -> Optional[Callable[[Any], Dict[str, Any]]]:
    """A fast reader of the instance `__dict__` of `cls`, bypassing any `__getattribute__`;
    None if instances carry slots (then `state_of` does the full job)."""
    if _slot_names(cls):
        return None
    for klass in cls.__mro__:
        descr = vars(klass).get("__dict__")
        if descr is not None and hasattr(descr, "__get__") and type(descr).__name__ == "getset_descriptor":
            return descr.__get__  # type: ignore[no-any-return]
    return None


class _SavedPairs:
    """(instance, saved state) pairs in transfer order, read from two parallel lists.

    The transaction reads it like a list of pairs (len, [-1], reversed, clear); the
    pairs are only built when read, so the loop allocates no tuple per instance.
    """

    __slots__ = ("objs", "states")

    def __init__(self) -> None:
        self.objs: List[Any] = []  # may run ahead of states: a chunk is added before its hooks run
        self.states: List[Dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.states)

    def __bool__(self) -> bool:
        return bool(self.states)

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        n = len(self.states)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(index)
        return self.objs[index], self.states[index]

    def __iter__(self) -> Iterator[Tuple[Any, Dict[str, Any]]]:
        return iter(list(zip(self.objs, self.states)))

    def __reversed__(self) -> Iterator[Tuple[Any, Dict[str, Any]]]:
        return reversed(list(zip(self.objs, self.states)))

    def clear(self) -> None:
        self.objs.clear()
        self.states.clear()


class EagerTransfer:
    """Run a transfer hook on every instance, remembering how to undo it.

    `saved` holds (instance, state before) per instance done, in order, kept as two
    parallel lists: a tuple per instance measured as a third of the loop's cost
    (every tuple is a GC-tracked allocation).
    """

    def __init__(self) -> None:
        self.saved = _SavedPairs()

    def run(self, objs: List[Any], hook_of: Callable[[type], Callable[..., Any]],
            progress: Callable[[int, int], None], every: int = 5000) -> int:
        """Call hook_of(type(obj))(obj, old) on each object; hooks are looked up once per type.

        Per type, the hook and a direct reader of the instance dict are looked up
        once; per instance, one dict copy is kept for undo and one given to the hook.
        """
        with _collector_paused(True):  # its full collections, mid-loop, were the clients' longest waits
            return self._run(objs, hook_of, progress, every)

    def _run(self, objs: List[Any], hook_of: Callable[[type], Callable[..., Any]],
             progress: Callable[[int, int], None], every: int) -> int:
        total = len(objs)
        per_type: Dict[type, Tuple[Callable[..., Any], Any]] = {}
        save = self.saved.states.append
        del self.saved.objs[len(self.saved.states):]  # an earlier run that stopped inside a chunk
        for start in range(0, total, every):
            chunk = objs[start:start + every]
            self.saved.objs.extend(chunk)
            for obj in chunk:
                cls = type(obj)
                known = per_type.get(cls)
                if known is None:
                    known = per_type[cls] = (hook_of(cls), _dict_reader(cls))
                hook, read = known
                if read is not None:
                    try:
                        state = read(obj).copy()
                    except AttributeError:
                        state = {}
                else:
                    state = state_of(obj)
                save(state)
                hook(obj, state.copy())
            if len(chunk) == every:
                progress(start + every, total)
        return total

    def undo(self) -> None:
        for obj, state in reversed(self.saved):
            restore_state(obj, state)
        self.saved.clear()
