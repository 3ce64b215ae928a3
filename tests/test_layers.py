"""The package's layers, read from its source (AST: nothing is imported, no Ray is started).

- ``raytasks/quant/`` is at the bottom: it imports nothing of raytasks outside itself;
- Ray is imported only in ``raytasks/runtime/`` (and ``raytasks/benchmarks/``, which
  measure bare Ray as their reference);
- no two modules import each other;
- no module passes :data:`MAX_LINES` lines.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raytasks"
MAX_LINES = 600


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. raytasks.runtime.fanout
    path: str  # from the repository root, e.g. raytasks/runtime/fanout.py
    is_package: bool  # an __init__.py

    @property
    def package(self) -> str:
        """The package its relative imports start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def tree(self) -> ast.Module:
        return ast.parse((ROOT / self.path).read_text(), self.path)


@cache
def modules() -> dict[str, Module]:
    found = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, file.relative_to(ROOT).as_posix(), is_package)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _known(name: str) -> str:
    """The module of raytasks that importing ``name`` names (the nearest known parent)."""
    while name not in modules() and "." in name:
        name = name.rpartition(".")[0]
    return name


@cache
def raytasks_imports(name: str) -> frozenset[str]:
    """The raytasks modules ``name`` imports, relative imports resolved.

    ``from P import x`` imports the module ``P.x`` when there is one (not the package
    ``P``), else the name ``x`` defined in ``P`` itself.
    """
    module = modules()[name]
    targets = set()
    for node in ast.walk(module.tree()):
        if isinstance(node, ast.Import):
            targets |= {_known(a.name) for a in node.names if within(a.name, "raytasks")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # one dot: this package; each further dot: one package up
                parts = module.package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not within(base, "raytasks"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules() else _known(base))
    targets.discard(name)
    return frozenset(targets)


def imports_ray(name: str) -> bool:
    for node in ast.walk(modules()[name].tree()):
        if isinstance(node, ast.Import) and any(within(a.name, "ray") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                within(node.module or "", "ray"):
            return True
    return False


def test_quant_imports_nothing_of_raytasks_outside_quant() -> None:
    # Given the modules of raytasks/quant
    quant = [name for name in modules() if within(name, "raytasks.quant")]
    assert "raytasks.quant.learning" in quant  # the walk found the package
    # When their imports of raytasks are read
    outside = sorted(f"{name} imports {target}" for name in quant
                     for target in raytasks_imports(name)
                     if not within(target, "raytasks.quant"))
    # Then none leaves raytasks/quant (what it needs comes in as parameters)
    assert not outside, f"raytasks/quant must stay at the bottom, but {outside}"


def test_ray_is_imported_only_in_runtime() -> None:
    # Given every module outside raytasks/runtime and raytasks/benchmarks
    others = [m for m in modules().values() if not any(
        within(m.name, allowed) for allowed in ("raytasks.runtime", "raytasks.benchmarks"))]
    assert any(m.path == "raytasks/handlers/backtests.py" for m in others)
    # When the ones that import Ray are found
    importers = {m.path for m in others if imports_ray(m.name)}
    # Then there are none
    assert not importers, f"{sorted(importers)} import Ray: move the part that touches Ray " \
        "behind a function of a module in raytasks/runtime/ and call that"


def test_no_two_modules_import_each_other() -> None:
    # Given the imports of every module of raytasks
    graph = {name: raytasks_imports(name) for name in modules()}
    assert "raytasks.runtime.fanout" in graph["raytasks.handlers.backtests"], \
        "an import inside a function, relative and two levels deep, was not resolved"
    # When the pairs that import each other are found
    circles = {frozenset({a, b}) for a, targets in graph.items() for b in targets
               if a in graph.get(b, frozenset())}
    # Then there are none
    assert not circles, f"{sorted(map(sorted, circles))} import each other: move what both " \
        "need into a module below them"


def test_modules_stay_small() -> None:
    # Given every module of raytasks
    # When their lines are counted
    sizes = {m.path: len((ROOT / m.path).read_text().splitlines()) for m in modules().values()}
    large = {path for path, lines in sizes.items() if lines > MAX_LINES}
    # Then none passes MAX_LINES
    assert not large, f"{sorted(f'{p} ({sizes[p]} lines)' for p in large)} pass " \
        f"{MAX_LINES} lines: split them"
