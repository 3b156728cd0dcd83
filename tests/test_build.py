"""`dynupdate build`: bundles from two git revisions or two folders, and the compatibility report.

A real multi-package project (src layout, then a flat one) is committed twice
in a temporary git repository; the report must flag each category, and the
built bundle must apply to a running process of the old revision.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from conftest import dynupdate, dynupdate_json

APP = '''\
import http.server, json, sys
from shop import cart
from shop.util import fmt

BASKET = cart.Cart()
BASKET.add("apple")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"total": fmt.money(cart.total(BASKET)), "items": BASKET.items}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("READY", server.server_address[1], flush=True)
server.serve_forever()
'''

CART_V1 = '''\
TAX = 0.1

class Cart:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

class Legacy:
    pass

class Other(Legacy):
    pass

def total(basket):
    return len(basket.items) * 2.0 * (1 + TAX)

def helper(a, b):
    return a + b

def gone():
    return 1
'''

CART_V2 = '''\
TAX = 0.2

class Cart:
    def __init__(self):
        self.items = []
        self.discount = 0

    def add(self, item):
        self.items.append(item)

class Legacy:
    pass

class Other:
    pass

def total(basket):
    return len(basket.items) * 3.0 * (1 + TAX)

def helper(a, c, d):
    return a + c + d

def fresh():
    return 2
'''

FMT_V1 = "def money(x):\n    return f'{x:.2f}'\n"
FMT_V2 = "def money(x):\n    return f'EUR {x:.2f}'\n"


def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _write(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def src_repo(tmp_path_factory):
    """src/ layout, two commits: v1 and v2 (every report category), plus v3 (safe changes only)."""
    repo = tmp_path_factory.mktemp("srcproj")
    _git(repo, "init", "-q")
    _write(repo, {"src/shop/__init__.py": "", "src/shop/app.py": APP, "src/shop/cart.py": CART_V1,
                  "src/shop/util/__init__.py": "", "src/shop/util/fmt.py": FMT_V1,
                  "src/shop/old_module.py": "X = 1\n", "templates/index.html": "<p>v1</p>\n",
                  "tests/test_shop.py": "def test_x():\n    pass\n", "README.md": "shop\n"})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v1")
    _git(repo, "tag", "v1")
    _write(repo, {"src/shop/cart.py": CART_V2, "src/shop/util/fmt.py": FMT_V2, "src/shop/old_module.py": None,
                  "src/shop/coupons.py": "def code():\n    return 'SAVE'\n",
                  "templates/index.html": "<p>v2</p>\n", "tests/test_shop.py": "def test_y():\n    pass\n"})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v2")
    _git(repo, "tag", "v2")
    _git(repo, "checkout", "-q", "v1")
    _git(repo, "checkout", "-qb", "safe")
    safe_cart = CART_V1.replace("* 2.0", "* 5.0").replace(
        "        self.items.append(item)\n",
        "        self.items.append(item)\n\n    def __dynupdate_transfer__(self, old):\n"
        "        self.items = [i.upper() for i in old['items']]\n", 1)
    _write(repo, {"src/shop/cart.py": safe_cart, "src/shop/util/fmt.py": FMT_V2})
    _git(repo, "commit", "-qam", "v3")
    _git(repo, "tag", "v3")
    _git(repo, "checkout", "-q", "v2")
    return repo


def test_build_from_revisions_reports_every_category(src_repo, tmp_path):
    out = tmp_path / "bundle"
    code, data = dynupdate_json("build", "--from", "v1", "--to", "v2", "-o", str(out), "--name", "shop-v2",
                                "--version", "2", "--requires", "base", cwd=str(src_repo))
    assert code == 0, data
    mods = {m["module"]: m for m in data["modules"]}
    assert set(mods) == {"shop.cart", "shop.util.fmt", "shop.coupons"}
    cart = mods["shop.cart"]
    assert cart["functions"]["changed"] == ["Cart.__init__", "helper", "total"]
    assert cart["functions"]["added"] == ["fresh"]
    assert cart["functions"]["removed"] == ["gone"]
    assert cart["needs_transfer"] == [{"class": "Cart", "attributes": ["discount"]}]
    assert cart["module_values_kept"] == ["TAX"]
    assert [i["name"] for i in cart["incompatible_signatures"]] == ["helper"]
    assert "removed or renamed" in cart["incompatible_signatures"][0]["reason"]
    assert [r["class"] for r in cart["refused"]] == ["Other"]
    assert "bases changed" in cart["refused"][0]["reason"]
    assert mods["shop.coupons"]["status"] == "added"
    assert mods["shop.util.fmt"]["functions"]["changed"] == ["money"]
    not_carried = {i["path"]: i["reason"] for i in data["not_carried"]}
    assert "deleted" in not_carried["src/shop/old_module.py"]
    assert "not Python" in not_carried["templates/index.html"]
    assert "outside every source root" in not_carried["tests/test_shop.py"]
    assert data["needs_action"] == 4
    # the written bundle is what `check` accepts, with the modules named as the program imports them
    check = dynupdate("check", str(out), "--json")
    assert check.returncode == 0, check.stderr
    checked = json.loads(check.stdout)
    assert checked["name"] == "shop-v2" and checked["version"] == "2" and checked["requires"] == "base"
    assert set(checked["modules"]) == {"shop.cart", "shop.util.fmt", "shop.coupons"}
    assert (out / "src/shop/cart.py").read_text() == CART_V2


def test_strict_writes_nothing_and_exits_1(src_repo, tmp_path):
    out = tmp_path / "strict"
    proc = dynupdate("build", "--from", "v1", "--to", "v2", "-o", str(out), "--strict", cwd=str(src_repo))
    assert proc.returncode == 1, proc.stderr
    assert not out.exists()
    assert "need action" in proc.stderr
    assert "Cart: __init__ now sets discount" in proc.stdout


def test_stub_transfer_writes_a_commented_skeleton(src_repo, tmp_path):
    out = tmp_path / "stub"
    proc = dynupdate("build", "--from", "v1", "--to", "v2", "-o", str(out), "--stub-transfer", cwd=str(src_repo))
    assert proc.returncode == 0, proc.stderr
    text = (out / "src/shop/cart.py").read_text()
    assert "    # def __dynupdate_transfer__(self, old):\n    #     self.discount = ..." in text
    compile(text, "cart.py", "exec")  # still compiles: the skeleton is only comments


def test_working_tree_is_the_default_new_side(src_repo, tmp_path):
    (src_repo / "src/shop/util/fmt.py").write_text("def money(x):\n    return f'USD {x:.2f}'\n")
    try:
        code, data = dynupdate_json("build", "--from", "v2", cwd=str(src_repo))
    finally:
        _git(src_repo, "checkout", "--", "src/shop/util/fmt.py")
    assert code == 0, data
    assert [m["module"] for m in data["modules"]] == ["shop.util.fmt"]
    assert data["version"].endswith("+wt") and data["written"] is False


def test_nothing_changed_is_a_usage_error(src_repo):
    proc = dynupdate("build", "--from", "v2", "--to", "v2", cwd=str(src_repo))
    assert proc.returncode == 2
    assert "no Python module changed" in proc.stderr


def test_flat_layout_folders_and_roots(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for root, body in ((old, "1"), (new, "2")):
        _write(root, {"mypkg/__init__.py": "", "mypkg/core.py": f"def f():\n    return {body}\n",
                      "tools/script.py": f"print({body})\n", "setup.cfg": f"[x]\nv={body}\n"})
    code, data = dynupdate_json("build", str(old), str(new), "--version", "7")
    assert code == 0, data
    assert sorted(m["module"] for m in data["modules"]) == ["mypkg.core", "tools.script"]
    code, data = dynupdate_json("build", str(old), str(new), "--root", "mypkg/..", "--root", "lib")
    assert code == 0, data
    # with explicit roots, a file outside them is listed, not carried
    code, data = dynupdate_json("build", str(old), str(new), "--root", "lib")
    assert code == 2 and "no Python module changed" in data["error"]["message"]


def test_built_bundle_applies_to_a_process_of_the_old_revision(src_repo, tmp_path, start_target):
    """v1 -> v3 (compatible changes with a transfer hook): built, applied, state carried, rolled back."""
    old_checkout = tmp_path / "old"
    _git(src_repo, "worktree", "add", "-q", "--detach", str(old_checkout), "v1")
    try:
        out = tmp_path / "bundle-v3"
        code, data = dynupdate_json("build", "--from", "v1", "--to", "v3", "--version", "3", "-o", str(out),
                                    "--strict", cwd=str(src_repo))
        assert code == 0 and data["needs_action"] == 0, data
        target = start_target([sys.executable, "-m", "dynupdate", "run", "-m", "shop.app"],
                              env={"PYTHONPATH": str(old_checkout / "src")})
        port = target.ready_value()

        def get() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                return json.loads(resp.read())

        assert get() == {"total": "2.20", "items": ["apple"]}
        code, result = dynupdate_json("apply", "--pid", str(target.pid), str(out))
        assert code == 0, result
        assert result["version"] == "3" and result["updated"]["instances"] == 1
        assert get() == {"total": "EUR 5.50", "items": ["APPLE"]}
        code, result = dynupdate_json("rollback", "--pid", str(target.pid))
        assert code == 0, result
        assert get()["total"] == "2.20"
    finally:
        _git(src_repo, "worktree", "remove", "--force", str(old_checkout))


def test_report_only_when_no_output(tmp_path):
    old, new = tmp_path / "a", tmp_path / "b"
    _write(old, {"m.py": textwrap.dedent("""\
        class K:
            __slots__ = ("a",)
        """)})
    _write(new, {"m.py": textwrap.dedent("""\
        class K:
            __slots__ = ("a", "b")
        """)})
    proc = dynupdate("build", str(old), str(new))
    assert proc.returncode == 0, proc.stderr
    assert "K: __slots__ changed" in proc.stdout and "no bundle written" in proc.stdout
