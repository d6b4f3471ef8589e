"""The package's layers are folders, and each imports only downward.

    client (docnum/*.py)  <-  interchange/  <-  ops/  <-  http/  <-  cli/

A module may import its own layer and the layers below it, never one above; no module imports another
module's private (`_name`) names; and the modules' own imports (at any depth of the code) form no cycle
between layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "python_client" / "docnum"
LAYERS = {"client": 0, "interchange": 1, "ops": 2, "http": 3, "cli": 4}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "client"


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import of docnum in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "docnum":
            names = [alias.name for alias in node.names]
            submodules = [
                f"{node.module}.{n}"
                for n in names
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{n}.py").exists()
                or (PACKAGE.parent / node.module.replace(".", "/") / n).is_dir()
            ]
            for sub in submodules:
                found.append((node.lineno, sub, []))
            found.append(
                (node.lineno, node.module, [n for n in names if f"{node.module}.{n}" not in submodules])
            )
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "docnum"]
    return found


MODULES = {_module(path): path for path in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_layer_folder() -> None:
    top = sorted(m for m in MODULES if m.count(".") == 1 and _layer(m) == "client")
    assert top == [
        "docnum.__main__",
        "docnum._client_async",
        "docnum._client_sync",
        "docnum.calls",
        "docnum.client",
        "docnum.codes",
        "docnum.errors",
        "docnum.models",
        "docnum.queries",
    ]
    assert {_layer(m) for m in MODULES} == set(LAYERS)


def test_each_module_imports_only_its_layer_and_the_ones_below() -> None:
    for module, path in MODULES.items():
        if module == "docnum.__main__":  # the entry point sits above everything
            continue
        for line, imported, _ in _imports(path):
            if imported == "docnum":
                continue
            assert LAYERS[_layer(imported)] <= LAYERS[_layer(module)], f"{path}:{line} imports {imported}"


def test_no_module_imports_another_modules_private_names() -> None:
    for module, path in MODULES.items():
        for line, imported, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private or imported == module, f"{path}:{line} imports {private} from {imported}"


def test_the_layers_themselves_form_no_cycle() -> None:
    edges = {
        (_layer(m), _layer(i))
        for m, p in MODULES.items()
        if m != "docnum.__main__"
        for _, i, _ in _imports(p)
        if i != "docnum"
    }
    assert all(LAYERS[a] >= LAYERS[b] for a, b in edges)
    assert ("client", "cli") not in edges and ("http", "cli") not in edges
