"""The sans-IO layers stay sans-IO: protocol/ and broker/storage/ import no I/O framework.

The check is static (ast over the source files), so it sees imports inside
functions and behind ``if TYPE_CHECKING`` too, and it never imports the code
it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IO_MODULES = frozenset({"asyncio", "socket", "selectors", "ssl", "uvloop"})


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if level == 0:
        return module or ""
    package = current.split(".") if is_package else current.split(".")[:-1]
    if level - 1 > len(package):
        raise ValueError(f"relative import beyond the top level in {current}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imported_modules(source: str, current: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it sits.

    ``from a import b`` yields ``a.b`` (b may be a module, and a.b is within a);
    ``from a import *`` yields ``a``; ``importlib.import_module``
    and ``__import__`` calls with a literal name count as imports too.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(current, is_package, node.module, node.level)
            # a.b lies within a, so checking a.b checks a too, except that a
            # parent package (``from broker import storage``) is not flagged.
            found.extend((node.lineno, base if a.name == "*" else f"{base}.{a.name}")
                         for a in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def protocol_violation(name: str) -> str | None:
    top = name.split(".")[0]
    if top in IO_MODULES:
        return "does I/O"
    if top in ("broker", "client"):
        return "is a layer above protocol"
    return None


def storage_violation(name: str) -> str | None:
    top = name.split(".")[0]
    if top in IO_MODULES:
        return "does I/O"
    if top == "client":
        return "is the client"
    if top == "broker" and not _within(name, "broker.storage"):
        return "is broker code outside broker.storage"
    return None


def violations(package_dir: Path, rule) -> list[str]:
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        name = module_name(path)
        for line, imported in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            why = rule(imported)
            if why:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {imported}, which {why}")
    return out


def test_protocol_is_sans_io():
    files = list((ROOT / "protocol").rglob("*.py"))
    assert files, "protocol/ has no modules"
    assert violations(ROOT / "protocol", protocol_violation) == []


def test_storage_is_sans_io():
    storage = ROOT / "broker" / "storage"
    if not any(storage.rglob("*.py")):
        pytest.skip("broker/storage has no modules yet")
    assert violations(storage, storage_violation) == []


# ------------------------------------------------------------ the checker itself


SAMPLE = """
import os, asyncio.streams
from . import sibling
from .. import config
from ..storage import segment
from broker import storage
import typing
if typing.TYPE_CHECKING:
    from client.producer import Producer

def later():
    import socket
    from selectors import DefaultSelector
    import importlib
    importlib.import_module("uvloop")
    __import__("ssl")
"""


def test_checker_sees_every_kind_of_import():
    names = [n for _, n in imported_modules(SAMPLE, "broker.storage.log")]
    for expected in ["asyncio.streams", "broker.storage.sibling", "broker.config",
                     "broker.storage.segment", "broker.storage", "client.producer.Producer",
                     "socket", "selectors.DefaultSelector", "uvloop", "ssl"]:
        assert expected in names
    bad = {n for n in names if storage_violation(n)}
    assert bad == {"asyncio.streams", "broker.config", "client.producer.Producer", "socket",
                   "selectors.DefaultSelector", "uvloop", "ssl"}
    assert storage_violation("broker") and storage_violation("broker.server")
    assert not storage_violation("broker.storage.segment")
    assert protocol_violation("broker.storage.segment")
    assert not protocol_violation("protocol.batch") and not protocol_violation("msgpack")


def test_relative_imports_in_a_package_init():
    names = [n for _, n in imported_modules("from . import segment\nfrom .. import server",
                                            "broker.storage", is_package=True)]
    assert names == ["broker.storage.segment", "broker.server"]
    assert [n for _, n in imported_modules("from .x import *", "protocol.batch")] == ["protocol.x"]
