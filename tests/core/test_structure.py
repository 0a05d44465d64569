"""The core's shape (docs/DESIGN.md, "Layers"): no import cycle among subplug's modules,
every import points down the layers or across one, and no module grows past ~600
lines without saying why.

The imports are read from the source (every ``import`` and ``from … import``, also
those inside functions and under ``TYPE_CHECKING``: they tie the modules' meanings
together just the same)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import subplug

PACKAGE = Path(subplug.__file__).parent

#: The layers of the core, bottom first: a unit (a top-level module or subpackage of
#: ``subplug``) may import units of its own layer or below, never above. A new module
#: gets a place here and in docs/DESIGN.md's table.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "facts",
        frozenset(
            {"errors", "languages", "types", "jsonl", "files", "subcommands", "linebreak"}
            | {"quant"}
        ),
    ),
    (
        "parts",
        frozenset(
            {"media", "segment", "prompts", "transcribe", "cues", "formats", "journal"}
            | {"cache", "runtime", "memory", "hookspecs", "plugins", "progress"}
            | {"calls", "choice", "loading"}
        ),
    ),
    ("engines", frozenset({"backends", "engine", "jobs", "live", "hosts", "default_plugins"})),
    ("tools", frozenset({"testing", "selftest"})),
    ("front", frozenset({"commands", "doctor", "cli", "__main__"})),
)

#: Lines a module may have before its docstring must say why it is longer.
MAX_LINES = 600
LONG_REASON = "Longer than 600 lines because"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package at ``root``."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (its own package's ``__init__``
    excluded: a package re-exporting its parts is not a loop)."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's
    algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def unit(module: str) -> str:
    """``subplug.cache.resolve`` → ``cache``; ``subplug.cli`` → ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(name: str) -> int:
    for number, (_, members) in enumerate(LAYERS):
        if name in members:
            return number
    raise KeyError(name)


# ------------------------------------------------------------------ the checks


def test_no_import_cycle_among_subplugs_modules() -> None:
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles: " + "; ".join(" → ".join(c) for c in found)


def test_every_unit_of_the_core_has_a_layer() -> None:
    units = {unit(name) for name in module_names(PACKAGE)} - {""}
    missing = sorted(name for name in units if not any(name in m for _, m in LAYERS))
    assert not missing, f"give these a layer in LAYERS and docs/DESIGN.md: {missing}"


def test_every_import_points_down_or_across() -> None:
    graph = import_graph(PACKAGE)
    upward = []
    for source, targets in graph.items():
        if not unit(source):
            continue
        for target in targets:
            if unit(target) and layer_of(unit(target)) > layer_of(unit(source)):
                upward.append(f"{source} → {target}")
    assert not upward, "imports pointing up the layers: " + ", ".join(sorted(upward))


def test_the_layers_in_design_md_match() -> None:
    design = (PACKAGE.parents[1] / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    for name, members in LAYERS:
        line = next((x for x in design.splitlines() if x.startswith(f"| {name} |")), None)
        assert line is not None, f"docs/DESIGN.md has no row for the {name} layer"
        for member in members:
            assert f"`{member}`" in line, f"docs/DESIGN.md's {name} row lacks `{member}`"


def test_no_module_over_600_lines_without_a_reason() -> None:
    long = []
    for name, path in module_names(PACKAGE).items():
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{name} ({len(text.splitlines())} lines)")
    assert not long, f"split these, or say in the docstring '{LONG_REASON} …': {long}"


# ------------------------------------------------- the checks can fail


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "def f():\n    from pkg.sub import c\n",
            "sub/__init__.py": "from pkg.sub.c import thing\n",
            "sub/c.py": "from .. import a\nthing = 1\n",
            "d.py": "import pkg.a\n",
        },
    )
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]]


def test_a_package_reexporting_its_parts_is_not_a_cycle(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from pkg.sub.part import thing\n",
            "sub/part.py": "from pkg.sub import other\nthing = 1\n",
            "sub/other.py": "",
        },
    )
    assert cycles(import_graph(package)) == []


@pytest.mark.parametrize(("unit_name", "expected"), [("errors", 0), ("engine", 2), ("cli", 4)])
def test_layers_are_ordered_bottom_first(unit_name: str, expected: int) -> None:
    assert layer_of(unit_name) == expected
