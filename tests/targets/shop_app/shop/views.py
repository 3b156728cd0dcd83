"""Request handlers (never patched). They reach shop.cart's code through every
kind of reference an update has to redirect, so tests can observe each over HTTP."""
import gc
import importlib
import threading

from shop import cart as cart_mod                       # module attribute access
from shop import tax
from shop.cart import Cart, GiftCart, discount, price_of  # from-imports

try:
    import dynupdate_agent
except ImportError:
    dynupdate_agent = None


class VipCart(Cart):
    """A subclass defined outside the patched module; inherits everything."""
    kind = "vip"


CARTS = {}                                  # cid -> live cart (state)
GATES = {}                                  # name -> Event that releases /slow calls
CALLBACKS = {"price": price_of}             # a callback stored in a dict registry
LISTENERS = []                              # bound methods stored in a list
FROZEN = (discount,)                        # a reference in an immutable container
_lock = threading.Lock()


def _seed():
    CARTS["c1"] = Cart("c1", ["apple", "pear"])
    CARTS["c2"] = Cart("c2", ["fig", "apple", "apple"])
    CARTS["g1"] = GiftCart("g1", ["pear"], message="happy birthday")
    CARTS["v1"] = VipCart("v1", ["fig"])
    LISTENERS.append(CARTS["c1"].describe)


_seed()


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _raw_dict(obj):
    """The instance dict without going through the class's attribute lookup."""
    return dict(object.__getattribute__(obj, "__dict__"))


def _cart(q):
    return CARTS[q.get("cart", "c1")]


def _new(q):
    kind = q.get("kind", "cart")
    items = [i for i in q.get("items", "").split(",") if i]
    cid = q["cart"]
    cls = {"cart": Cart, "gift": GiftCart, "vip": VipCart}[kind]
    with _lock:
        CARTS[cid] = cls(cid, items)
    return {"cart": cid, "type": type(CARTS[cid]).__name__}


def _spawn(q):
    n, prefix = int(q.get("n", 1000)), q.get("prefix", "bulk")
    with _lock:
        for i in range(n):
            cid = f"{prefix}-{i}"
            CARTS[cid] = Cart(cid, ["apple"] * (i % 3 + 1))
    return {"spawned": n}


def _state(q):
    bulk = q.get("bulk") == "1"
    touch = q.get("raw") != "1"
    carts = {}
    for cid, c in list(CARTS.items()):
        if not bulk and "-" in cid:
            continue
        carts[cid] = _jsonable(dict(vars(c)) if touch else _raw_dict(c))
    return {
        "carts": carts,
        "types": {cid: type(c).__name__ for cid, c in CARTS.items() if bulk or "-" not in cid},
        "module": {name: _jsonable(getattr(cart_mod, name)) for name in
                   ("PRICES", "TAX_RATE", "ADDS", "STATS", "TRANSFER_LOG") if hasattr(cart_mod, name)},
        "class": {"kind": Cart.kind, "created": Cart.created, "vip_kind": VipCart.kind,
                  "currency": getattr(Cart, "currency", None)},
        "tax_rate": tax.RATE,
    }


def _gate(name):
    with _lock:
        return GATES.setdefault(name, threading.Event())


def _has(q):
    name = q["name"]
    return {"module": hasattr(cart_mod, name), "Cart": hasattr(Cart, name), "GiftCart": hasattr(GiftCart, name)}


def _promo(q):
    return {"banner": importlib.import_module("shop.promo").banner()}


def _import(q):
    try:
        module = importlib.import_module(q["name"])
    except ImportError as exc:
        return {"imported": False, "error": str(exc)}
    return {"imported": True, "value": _jsonable(getattr(module, q.get("attr", "VALUE"), None))}


ROUTES = {
    "/health": lambda q: {"ok": True},
    "/version": lambda q: {"version": dynupdate_agent.current_version() if dynupdate_agent else None},
    "/price": lambda q: {"price": price_of(q.get("item", "apple"))},
    "/modattr": lambda q: {"price": cart_mod.price_of(q.get("item", "apple"))},
    "/callback": lambda q: {"price": CALLBACKS["price"](q.get("item", "apple"))},
    "/bound": lambda q: {"describe": LISTENERS[0]()},
    "/decorated": lambda q: {"discount": discount(int(q.get("amount", 1000))),
                             "name": discount.__name__, "doc": discount.__doc__},
    "/isinstance": lambda q: {"isinstance": isinstance(_cart(q), Cart),
                              "gift": isinstance(_cart(q), GiftCart),
                              "same_class": cart_mod.Cart is Cart and cart_mod.GiftCart is GiftCart,
                              "vip_subclass": issubclass(VipCart, cart_mod.Cart),
                              "type": type(_cart(q)).__name__},
    "/total": lambda q: {"total": _cart(q).total()},
    "/add": lambda q: {"count": _cart(q).add(q.get("item", "apple"))},
    "/describe": lambda q: {"describe": _cart(q).describe()},
    "/label": lambda q: {"label": _cart(q).label},
    "/classmethod": lambda q: {"Cart": Cart.describe_class(), "GiftCart": GiftCart.describe_class(),
                               "VipCart": VipCart.describe_class(), "instance": _cart(q).describe_class()},
    "/static": lambda q: {"Cart": Cart.fmt(int(q.get("cents", 1234))),
                          "instance": _cart(q).fmt(int(q.get("cents", 1234)))},
    "/summary": lambda q: {"summary": _cart(q).summary()},
    "/stats": lambda q: {"stats": cart_mod.stats()},
    "/legacy": lambda q: {"price": cart_mod.legacy_price("apple"), "label": _cart(q).legacy_label()},
    "/has": _has,
    "/nested": lambda q: {"limit": Cart.Policy().limit(), "name": Cart.Policy.name(),
                          "same": Cart.Policy is cart_mod.Cart.Policy},
    "/frozen": lambda q: {"discount": FROZEN[0](int(q.get("amount", 1000)))},
    "/slow": lambda q: {"quote": cart_mod.slow_quote(q.get("item", "apple"), float(q.get("seconds", 2)),
                                                     _gate(q["gate"]) if "gate" in q else None)},
    "/release": lambda q: {"released": _gate(q["gate"]).set() or True},
    "/vat": lambda q: {"vat": tax.vat(int(q.get("cents", 1000)))},
    "/promo": _promo,
    "/import": _import,
    "/new": _new,
    "/spawn": _spawn,
    "/touch": lambda q: {"cid": _cart(q).cid},
    "/state": _state,
    "/raw": lambda q: {"dict": _jsonable(_raw_dict(_cart(q)))},
    "/money": lambda q: {"cents": cart_mod.Money(int(q.get("cents", 5))).cents},
    "/gc": lambda q: {"collected": gc.collect()},
}


def handle(path, q):
    route = ROUTES.get(path)
    if route is None:
        return 404, {"error": f"no route {path}"}
    return 200, route(q)
