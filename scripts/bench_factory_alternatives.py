"""Creation cost of instance-tracking designs for `updatable` (numbers quoted in BENCHMARKS.md).

Run: python scripts/bench_factory_alternatives.py  (standalone, ~10 s, allocates 2M objects)
"""
import time, weakref, gc, statistics
from _weakref import ref
ns=time.perf_counter_ns
class Plain:
    def __init__(self, x): self.x = x
def mk_cur():
    ws = weakref.WeakSet(); add = ws.add
    class C:
        def __init__(self, x): self.x = x
    def __new__(k, *a, **kw):
        s = object.__new__(k); add(s); return s
    C.__new__ = staticmethod(__new__)
    return C, ws
def mk_inline():
    ws = weakref.WeakSet(); data_add = ws.data.add; remove = ws._remove
    class C:
        def __init__(self, x): self.x = x
    def __new__(k, *a, _new=object.__new__, _ref=ref, _add=data_add, _rm=remove):
        s = _new(k); _add(_ref(s, _rm)); return s
    C.__new__ = staticmethod(__new__)
    return C, ws
def mk_init():  # hook in __init__ instead of __new__ (wrapping the user's __init__)
    ws = weakref.WeakSet(); data_add = ws.data.add; remove = ws._remove
    class C:
        def __init__(self, x): self.x = x; data_add(ref(self, remove))
    return C, ws
def mk_gc():
    class C:
        def __init__(self, x): self.x = x
    return C, None
def t(cls, n=5000):
    t0=ns()
    for _ in range(n):
        cls(1);cls(1);cls(1);cls(1);cls(1);cls(1);cls(1);cls(1);cls(1);cls(1)
    return (ns()-t0)/(n*10)
gc.disable()
for name, mk in [("current",mk_cur),("inline new",mk_inline),("in __init__",mk_init),("gc scan (no hook)",mk_gc)]:
    C,_=mk()
    rs=[]
    for r in range(15):
        a=t(C); b=t(Plain); rs.append(a/b)
    print(f"{name:20s} ratio {statistics.median(rs):.2f}  {t(C):.0f} ns vs {t(Plain):.0f}")
gc.enable()
# discovery cost for the gc alternative
C,_=mk_gc()
keep=[C(i) for i in range(1000000)]
t0=time.perf_counter(); r=[o for o in gc.get_referrers(C) if type(o) is C]; print("get_referrers 1M:", time.perf_counter()-t0, len(r))
t0=time.perf_counter(); r=[o for o in gc.get_objects() if type(o) is C]; print("get_objects 1M:", time.perf_counter()-t0, len(r))
C2,ws=mk_cur(); keep2=[C2(i) for i in range(1000000)]
t0=time.perf_counter(); r=list(ws); print("WeakSet list 1M:", time.perf_counter()-t0, len(r))
