"""The import graph is layered: core at the bottom, the four product packages above it in one
direction, the command line on top; no module imports another in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"fpgaprint": "fpgaprint", "core": "fpgaprint.core", "compiler": "fpgaprint.compiler",
           "fingerprint": "fpgaprint.fingerprint", "hw_targets": "fpgaprint.hw_targets",
           "harness": "fpgaprint.harness"}
# what each layer may import (besides itself)
ALLOWED = {
    "core": set(),
    "compiler": {"core"},
    "hw_targets": {"core", "compiler"},
    "fingerprint": {"core", "compiler"},
    "harness": {"core", "compiler", "fingerprint", "hw_targets"},
    "cli": {"core", "compiler", "fingerprint", "hw_targets", "harness"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in ALLOWED or parts[1] == "cli":
        return "cli"
    return parts[1]


def _imports(module: str, path: Path, known: set[str] = frozenset()) -> set[str]:
    """Every fpgaprint module `path` imports, at any depth of the file (`from PKG import MOD`
    depends on MOD, not on the rest of PKG)."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            found |= subs & known if subs & known else {base}
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _imports(m, p, set(mods)) if i in mods and i != m}
            for m, p in mods.items()}


def test_no_generic_top_level_module_is_imported():
    generic = ("compiler", "fingerprint", "hw_targets", "harness", "core")
    for m, p in _modules().items():
        bad = {i for i in _imports(m, p) if i.split(".")[0] in generic}
        assert not bad, f"{p.relative_to(ROOT)} imports {sorted(bad)}: use fpgaprint.*"


def test_layers_only_import_downwards():
    wrong = []
    for m, deps in _graph().items():
        for d in deps:
            a, b = _layer(m), _layer(d)
            if a != b and b not in ALLOWED[a]:
                wrong.append(f"{m} ({a}) imports {d} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            # importing a package's __init__ for its submodule is not a dependency on the
            # package's own contents
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
