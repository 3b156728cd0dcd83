"""Unit tests for the pure logic under the instance set (agent/factories.py, typeslots.py,
instances.py); the real-process tests are in test_instance_set.py."""
from __future__ import annotations

import gc
import threading
import weakref

from dynupdate_agent import factories, instances, typeslots


def test_sweep_keeps_references_appended_while_it_runs():
    class Item:
        pass

    factory = factories.Factory(Item)
    keep = [Item() for _ in range(50_000)]
    factory.refs.extend(weakref.ref(o) for o in keep)
    dead = [Item() for _ in range(50_000)]
    factory.refs.extend(weakref.ref(o) for o in dead)
    del dead
    added = []
    stop = threading.Event()

    def append():
        ref = weakref.ref
        while not stop.is_set():
            obj = Item()
            added.append(obj)
            factory.refs.append(ref(obj))

    thread = threading.Thread(target=append)
    thread.start()
    try:
        for _ in range(20):
            factory.sweep()
    finally:
        stop.set()
        thread.join()
    assert len(factory) == len(keep) + len(added)


def test_new_hook_removal_leaves_the_class_constructible_with_arguments():
    class Base:
        def __init__(self, n):
            self.n = n

    class Child(Base):
        pass

    calls = []
    hook = typeslots.NewHook(Base, lambda klass, *a, **k: calls.append(klass) or object.__new__(klass))
    Child(1)
    assert calls == [Child]
    hook.remove()
    assert "__new__" not in vars(Base)
    assert Base(2).n == 2 and Child(3).n == 3 and calls == [Child]


def test_census_sees_instances_created_after_the_scan_and_removes_its_watch():
    class Thing:
        def __init__(self, n):
            self.n = n

    before = [Thing(i) for i in range(100)]
    census = instances.Census([Thing])
    try:
        assert census.prepare() == {Thing: 100}
        during = [Thing(i) for i in range(5)]
        decided = census.decide([Thing])[Thing]
        assert {id(o) for o in decided} == {id(o) for o in before + during}
        late = Thing(99)
        assert census.created_since_decided(Thing) == [late]
    finally:
        census.close()
    assert "__new__" not in vars(Thing)
    assert Thing(1).n == 1
    gc.collect()
