"""The package layout: no import cycle between segkit's modules, no module far over 400 lines,
and the README's Layout section lists every module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "segkit"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """segkit module -> the segkit modules it imports (any depth of the file, so function-level
    imports count too)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # "from . import x" imports the submodule x, not its package's namespace
                named = [a.name for a in node.names if f"{base}.{a.name}" not in modules]
                targets = subs + ([base] if named else [])
            for t in targets:
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_find_cycle_detects_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_segkit_modules():
    graph = import_graph()
    # the package __init__ imports its modules; a module importing "segkit" itself is upward
    for mod, deps in graph.items():
        if mod != "segkit":
            assert "segkit" not in deps, f"{mod} imports the package namespace (upward import)"
    inner = {m: d - {"segkit"} for m, d in graph.items() if m != "segkit"}
    assert find_cycle(inner) is None, f"import cycle: {' -> '.join(find_cycle(inner))}"


def test_modules_are_readable_in_one_sitting():
    long = {p.name: n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 440}
    assert not long, f"modules over ~400 lines: {long}"


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).as_posix()
        if p.name != "__init__.py":
            assert rel in layout, f"README Layout does not mention segkit/{rel}"


def test_readme_palette_legend_is_the_package_palette():
    from segkit.constants import CLASSES, PALETTE

    readme = (ROOT / "README.md").read_text()
    for name, rgb in zip(CLASSES, PALETTE, strict=True):
        assert f"| {name} | {rgb[0]}, {rgb[1]}, {rgb[2]} |" in readme, name
