"""Build the failure-case bundles from patches/shop-v2.

Each bundle is shop-v2 with exactly one defect, so a partially applied update
would be visible (prices double) while a correct engine changes nothing. The
tests build them into a temporary folder (tests/shoputil.py: `bundle()`), so
they always follow shop-v2; to look at them:
    python tests/bundles/regenerate.py OUT_DIR
"""
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
V2 = os.path.join(HERE, "..", "..", "patches", "shop-v2", "cart.py")
TAX = os.path.join(HERE, "..", "targets", "shop_app", "shop", "tax.py")


def manifest(name, version, modules, requires="base", comment="", extra=""):
    lines = [f"# {comment}"] if comment else []
    lines += [f'name = "{name}"', f'version = "{version}"']
    if requires:
        lines.append(f'requires = "{requires}"')
    if extra:
        lines.append(extra)
    lines.append("")
    lines.append("[modules]")
    lines += [f'"{mod}" = "{path}"' for mod, path in modules.items()]
    return "\n".join(lines) + "\n"


def write(bundle, files):
    folder = os.path.join(_out[0], bundle)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as fh:
            fh.write(text)


def replace(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


_out = [HERE]


def main(out_dir=HERE):
    """Write every failure-case bundle under `out_dir`."""
    _out[0] = out_dir
    v2 = open(V2).read()
    tax = open(TAX).read()
    cart_only = {"shop.cart": "cart.py"}

    bad_transfer = replace(v2, "TRANSFER_LOG = []        # cids whose state was migrated, in order\n",
                           "TRANSFER_LOG = []\n_CALLS = [0]\n")
    bad_transfer = replace(bad_transfer, '        """Called once per live cart: `old` is its attribute dict from before."""\n',
                           '        _CALLS[0] += 1\n'
                           '        if _CALLS[0] == 7:\n'
                           '            raise RuntimeError("transfer hook failed on the 7th instance")\n')
    write("bad-transfer", {"patch.toml": manifest("bad-transfer", "2-bad-transfer", cart_only,
                                                  comment="The transfer hook raises on the 7th instance."),
                           "cart.py": bad_transfer})

    write("exec-raises", {
        "patch.toml": manifest("exec-raises", "2-exec-raises", {"shop.cart": "cart.py", "shop.tax": "tax.py"},
                               comment="shop.cart is fine; shop.tax raises while it is executed."),
        "cart.py": v2,
        "tax.py": tax.replace("RATE = 0.20", "RATE = 0.30") + '\nraise RuntimeError("boom while executing shop.tax")\n',
    })

    bad_bases = replace(v2, "class GiftCart(Cart):\n", "class Wrapping:\n    pass\n\n\nclass GiftCart(Cart, Wrapping):\n")
    write("bad-bases", {"patch.toml": manifest("bad-bases", "2-bad-bases", cart_only,
                                               comment="GiftCart gets another base class: unsupported."),
                        "cart.py": bad_bases})

    bad_slots = replace(v2, '    __slots__ = ("cents",)\n', '    __slots__ = ("cents", "currency")\n')
    write("bad-slots", {"patch.toml": manifest("bad-slots", "2-bad-slots", cart_only,
                                               comment="Money's __slots__ layout changes: unsupported."),
                        "cart.py": bad_slots})

    bad_meta = replace(v2, "@updatable\nclass Cart:\n", "class Meta(type):\n    pass\n\n\n@updatable\nclass Cart(metaclass=Meta):\n")
    write("bad-metaclass", {"patch.toml": manifest("bad-metaclass", "2-bad-metaclass", cart_only,
                                                   comment="Cart gets a metaclass: unsupported."),
                            "cart.py": bad_meta})

    write("requires-mismatch", {"patch.toml": manifest("requires-mismatch", "8", cart_only, requires="7",
                                                       comment="Only for processes at version 7."),
                                "cart.py": v2})

    hook_raises = replace(v2, "    TAX_RATE = 0.25\n", "    TAX_RATE = 0.25\n    raise RuntimeError(\"module hook failed\")\n")
    write("module-hook-raises", {"patch.toml": manifest("module-hook-raises", "2-hook-raises", cart_only,
                                                        comment="The module-level hook raises after the swap."),
                                 "cart.py": hook_raises})

    revert_raises = replace(v2, '        """Called on rollback: back to the base layout (an `items` list)."""\n',
                            '        if self.cid == "c2":\n'
                            '            raise RuntimeError("revert hook failed on c2")\n')
    write("revert-raises", {"patch.toml": manifest("revert-raises", "2-revert-raises", cart_only,
                                                   comment="Applies fine; its revert hook raises on rollback."),
                            "cart.py": revert_raises})

    write("lazy-manifest", {"patch.toml": manifest("lazy-manifest", "2-lazy", cart_only, extra="lazy = true",
                                                   comment="shop-v2's cart, transferred lazily by the manifest."),
                            "cart.py": v2})

    lazy_attr = replace(v2, '    currency = "EUR"     # new class attribute: added\n',
                        '    currency = "EUR"     # new class attribute: added\n    __dynupdate_lazy__ = True\n')
    write("lazy-attr", {"patch.toml": manifest("lazy-attr", "2-lazy-attr", cart_only,
                                               comment="Cart asks for lazy transfer itself."),
                        "cart.py": lazy_attr})

    broken = replace(v2, "def stats():\n", "def stats(:\n")
    write("syntax-error", {"patch.toml": manifest("syntax-error", "2-syntax", cart_only,
                                                  comment="cart.py does not compile."),
                           "cart.py": broken})

    write("missing-file", {"patch.toml": manifest("missing-file", "2-missing", {"shop.cart": "nowhere.py"},
                                                  comment="names a file that is not there.")})

    freevars = replace(v2, """def counted(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        STATS["decorated_calls"] += 1
        return func(*args, **kwargs)
    return wrapper
""", """def counted(func, key="decorated_calls"):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        STATS[key] += 1
        return func(*args, **kwargs)
    return wrapper
""")
    write("freevars", {"patch.toml": manifest("freevars", "2-freevars", cart_only,
                                              comment="The decorator's wrapper closes over one more variable: "
                                                      "it cannot be updated in place, only replaced."),
                       "cart.py": freevars})

    write("bad-toml", {"patch.toml": 'name = "bad-toml"\nversion = 2 3\n[modules\n', "cart.py": v2})

    write("no-manifest", {"cart.py": v2})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
