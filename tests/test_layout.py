"""The package layout: no import cycle between segkit's modules, imports flow down the README's
Layout table (a module imports only modules listed above it), no module far over 400 lines, and
the README's Layout section lists every module."""

from __future__ import annotations

import ast
import re
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


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def layout_order() -> list[str]:
    """segkit's modules in the order of the README Layout table, top first."""
    paths = re.findall(r"^\| `(segkit/[\w/]+\.py)` \|", _layout_section(), flags=re.MULTILINE)
    return [_module_name(ROOT / p) for p in paths]


def upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a listed module imports one listed at or below it.

    A module missing from ``order`` that imports others (a package ``__init__`` re-exporting its
    submodules, e.g. ``segkit.metrics``) sits right below the lowest module it imports; other
    unlisted modules are not checked here (test_readme_layout_lists_every_module names them)."""
    rank: dict[str, float] = {m: float(i) for i, m in enumerate(order)}

    def position(m: str, seen: frozenset[str] = frozenset()) -> float | None:
        if m not in rank and graph.get(m) and m not in seen:
            deps = [position(d, seen | {m}) for d in graph[m]]
            if all(d is not None for d in deps):
                rank[m] = max(deps) + 0.5  # type: ignore[type-var]
        return rank.get(m)

    bad = []
    for mod in order:
        for dep in sorted(graph.get(mod, ())):
            where = position(dep)
            if where is not None and where >= rank[mod]:
                bad.append((mod, dep))
    return bad


def test_upward_imports_detects_an_import_from_below():
    graph = {"a": set(), "b": {"a"}, "c": {"d"}, "d": set(), "pkg": {"a"}, "e": {"pkg"}}
    assert upward_imports(graph, ["a", "b", "c", "d", "e"]) == [("c", "d")]
    assert upward_imports(graph, ["a", "b", "d", "c", "e"]) == []
    # an unlisted package __init__ sits below what it imports
    assert upward_imports({**graph, "b": {"pkg"}}, ["a", "b", "d", "c"]) == []
    assert upward_imports({**graph, "a": {"pkg"}, "pkg": {"b"}}, ["a", "b"]) == [("a", "pkg")]


def test_readme_layout_is_the_import_order():
    order = layout_order()
    assert len(order) == len(set(order)), "a module is listed twice in the README Layout table"
    assert order[:2] == ["segkit.constants", "segkit.config"], order[:2]
    graph = import_graph()
    inner = {m: d - {"segkit"} for m, d in graph.items() if m != "segkit"}
    bad = upward_imports(inner, order)
    assert not bad, "imports against the README Layout order (move the row or the code): " + (
        ", ".join(f"{a} imports {b}, listed below it" for a, b in bad)
    )


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
    layout = _layout_section()
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).as_posix()
        if p.name != "__init__.py":
            assert rel in layout, f"README Layout does not mention segkit/{rel}"


def test_readme_palette_legend_is_the_package_palette():
    from segkit.constants import CLASSES, PALETTE

    readme = (ROOT / "README.md").read_text()
    for name, rgb in zip(CLASSES, PALETTE, strict=True):
        assert f"| {name} | {rgb[0]}, {rgb[1]}, {rgb[2]} |" in readme, name


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def duplicated_facts(sources: dict[str, str]) -> list[str]:
    """Places outside ``constants.py`` that define a fact of ``segkit.constants`` again: the same
    name bound to the same literal value, a list of image suffixes, the course image size in
    either order, a palette colour row or the class list. ``sources``: file name -> source."""
    consts: dict[str, object] = {}
    for node in ast.parse(sources["constants.py"]).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            values = _literal(node.value)
            values = values if isinstance(target, ast.Tuple) else [values]
            if isinstance(values, (tuple, list)) and len(values) == len(names):
                consts |= {
                    n.id: v for n, v in zip(names, values, strict=True) if isinstance(n, ast.Name)
                }
    size, palette = consts["IMAGE_SIZE"], consts["PALETTE"]
    classes = consts["CLASSES"]
    bad = []
    for name, text in sources.items():
        if name == "constants.py":
            continue
        for node in ast.walk(ast.parse(text)):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(target, ast.Name) and target.id in consts:
                    if _literal(node.value) == consts[target.id]:
                        bad.append(f"{where} redefines {target.id}")
            elif isinstance(node, (ast.Tuple, ast.List)):
                value = _literal(node)
                if not isinstance(value, (tuple, list)):
                    continue
                value = tuple(value)
                if ".jpg" in value or (".png" in value and len(value) > 1):
                    bad.append(f"{where} lists image suffixes {value}")
                elif value in (tuple(size), tuple(size)[::-1]):
                    bad.append(f"{where} holds the image size {value}")
                elif value in palette:
                    bad.append(f"{where} holds a palette colour {value}")
                elif classes[0] in value and classes[-1] in value:
                    bad.append(f"{where} lists the classes")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if " ".join(classes[:3]) in node.value:
                    bad.append(f"{where} lists the classes")
    return bad


def test_duplicated_facts_are_found():
    consts = (
        "IMAGE_SIZE = (224, 288)\nPALETTE = ((1, 2, 3),)\nCLASSES = ('sky', 'b', 'misc')\nK = 16\n"
    )
    sources = {
        "constants.py": consts,
        "ok.py": "from .constants import K\nX = K\nSUFFIXES = ('.tar.gz', '.zip')\nK2 = 17\n",
        "bad.py": "K = 16\nS = (288, 224)\nE = ('.jpg', '.png')\nC = (1, 2, 3)\n"
        "N = 'sky b misc'.split()\n",
    }
    assert duplicated_facts(sources) == [
        "bad.py:1 redefines K",
        "bad.py:2 holds the image size (288, 224)",
        "bad.py:3 lists image suffixes ('.jpg', '.png')",
        "bad.py:4 holds a palette colour (1, 2, 3)",
        "bad.py:5 lists the classes",
    ]


def test_each_fact_of_constants_is_defined_once():
    sources = {p.relative_to(PKG).as_posix(): p.read_text() for p in sorted(PKG.rglob("*.py"))}
    bad = duplicated_facts(sources)
    assert not bad, "define these in segkit/constants.py only and import them: " + "; ".join(bad)
