"""The package layout follows the path a photo travels: no upward or circular imports.

Each room of ``rxvision`` may import only rooms below it on that path (decode at the
bottom, the CLI at the top), read from the source with ``ast`` so that lazy imports inside
functions count too. Rooms at one level (e.g. ``serve`` and ``deploy``) do not import each
other. A module-level import cycle between two modules is refused as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rxvision"

# Room -> level on the photo's path. Top-level modules are rooms of their own.
LEVELS: dict[str, int] = {
    "config": 0, "io_utils": 0, "logmath": 0,
    "data": 1, "models": 1,
    "artifact": 2,
    "validation": 2,
    "locate": 3,
    "imprint": 4,
    "library": 5,
    "identify": 6,
    "engine": 7, "deploy": 7, "serve": 7,
    "errors": 8, "commands": 8,
    "cli": 9, "__main__": 10,
}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module_level_only: bool,
             package_dir: Path = PACKAGE) -> list[tuple[str, int]]:
    """Absolute ``rxvision.…`` modules that ``path`` imports, with line numbers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("rxvision")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("rxvision"):
                continue
            if node.module is None or not module_level_only:
                # `from . import x` names modules too
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            found.append((target, node.lineno))
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_level_and_a_docstring():
    rooms = {_room(_module_name(p)) for p in _sources()} - {""}
    assert rooms <= set(LEVELS), f"rooms without a level in LEVELS: {rooms - set(LEVELS)}"
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 1, f"{init}: needs a one-line docstring"


def test_no_room_imports_a_room_above_it_or_beside_it():
    upward = []
    for path in _sources():
        here = _room(_module_name(path))
        if here == "":  # rxvision/__init__.py: the public facade, resolved lazily
            continue
        for target, line in _imports(path, module_level_only=False):
            there = _room(target)
            if there in ("", here) or there not in LEVELS:
                continue
            if LEVELS[there] >= LEVELS[here]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} "
                              f"({here}, level {LEVELS[here]}) imports {target} "
                              f"({there}, level {LEVELS[there]})")
    assert not upward, "imports against the photo's path:\n" + "\n".join(upward)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_module_level_import_cycle():
    modules = {_module_name(p): p for p in _sources()}
    graph = {}
    for name, path in modules.items():
        targets = {t for t, _ in _imports(path, module_level_only=True) if t in modules}
        if path.name == "__init__.py":  # a package importing its own modules is no cycle
            targets = {t for t in targets if not t.startswith(name + ".")}
        graph[name] = targets
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The walk itself works: a relative import inside a function is resolved and found."""
    probe = tmp_path / "rxvision" / "data" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..identify.identifier import Identifier\n")
    found = _imports(probe, module_level_only=False, package_dir=tmp_path / "rxvision")
    assert ("rxvision.identify.identifier", 2) in found
    assert _imports(probe, module_level_only=True, package_dir=tmp_path / "rxvision") == []
