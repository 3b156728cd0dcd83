"""References taken at startup, before any update (never patched)."""
from refsapp import svc

GREETER = svc.Greeter()
BOUND = GREETER.greet                 # a stored bound method
IN_TUPLE = (svc.Greeter.greet,)       # the plain function in a tuple
MAKE = svc.Greeter.make               # a bound classmethod
PRICE = svc.price                     # the wrapper made by deco.logged
PRICE_INNER = svc.price.__wrapped__   # what functools.wraps recorded
POINT = svc.Point(1, 2)
RATE = svc.rate                       # an lru_cache object (not a function) around svc's code
TAX = svc.tax                         # an lru_cache object the next version drops
