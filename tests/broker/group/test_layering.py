"""The coordinator's core stays sans-IO: only the shell (handlers.py) may use asyncio."""

from __future__ import annotations

from pathlib import Path

from tests.test_layering import IO_MODULES, ROOT, imported_modules, module_name

SHELL = {"handlers.py"}


def test_group_core_imports_no_io_framework():
    package = ROOT / "broker" / "group"
    bad = []
    for path in sorted(package.glob("*.py")):
        if path.name in SHELL:
            continue
        name = module_name(path)
        for line, imported in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            top = imported.split(".")[0]
            if top in IO_MODULES or imported.startswith(("broker.group.handlers", "broker.server",
                                                          "broker.handlers", "client")):
                bad.append(f"{Path(path).relative_to(ROOT)}:{line} imports {imported}")
    assert bad == []
