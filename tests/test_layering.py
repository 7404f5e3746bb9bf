"""Issue 19, item 2: the import graph of osum_data/ and training/ has no circles and no upward imports.

How it is checked: every module is parsed with `ast` (no import runs). Its edges are every `import` and
`from ... import` anywhere in the file (function-level ones included), every
`importlib.import_module("...")` / `__import__("...")` with a literal name, and every other string
constant that is exactly the dotted name of one of our modules (the hidden imports: stage modules
handed to the runner by name). `from pkg import name` points at `pkg.name` when that is a module, else
at the module `pkg/__init__.py` re-exports `name` from, else at `pkg`. The layers are data:
docs/layers.yaml (bottom to top), shown in docs/layout.md.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LAYERS_FILE = REPO / "docs" / "layers.yaml"
ROOTS = ("osum_data", "training")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    reexports: dict[str, str] = field(default_factory=dict)  # name -> module it comes from


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    how: str  # "import", "importlib" or "string"


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def load_modules() -> dict[str, Module]:
    modules = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            name, is_package = _module_name(path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            modules[name] = Module(name, path, is_package, tree)
    for mod in modules.values():
        if mod.is_package:
            for node in mod.tree.body:
                if isinstance(node, ast.ImportFrom):
                    origin = _absolute(mod, node)
                    if origin in modules:
                        for alias in node.names:
                            mod.reexports[alias.asname or alias.name] = origin
    return modules


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> bool:
    return name.split(".")[0] in ROOTS


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def edges_of(mod: Module, modules: dict[str, Module]) -> list[Edge]:
    found: list[Edge] = []

    def add(target: str, line: int, how: str) -> None:
        dst = _resolve(target, modules)
        if dst and dst != mod.name:
            found.append(Edge(mod.name, dst, line, how))

    # An entry-point group's name ("osum_data.stages") is not a module reference even when a package
    # of that name exists: skip constants given as `group=` or assigned to a *GROUP name.
    not_modules = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.keyword) and node.arg == "group" and isinstance(node.value, ast.Constant):
            not_modules.add(id(node.value))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id.endswith("GROUP") for t in targets):
                not_modules.add(id(node.value))

    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name):
                    add(alias.name, node.lineno, "import")
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(mod, node)
            if not _ours(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    add(sub, node.lineno, "import")
                elif base in modules and alias.name in modules[base].reexports:
                    add(modules[base].reexports[alias.name], node.lineno, "import")
                else:
                    add(base, node.lineno, "import")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0].value
            if fname in ("import_module", "__import__") and isinstance(arg, str) and _ours(arg):
                add(arg, node.lineno, "importlib")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            if id(node) not in not_modules:
                add(node.value, node.lineno, "string")
    return found


@functools.cache
def graph() -> tuple[dict[str, Module], list[Edge]]:
    modules = load_modules()
    edges = {e for m in modules.values() for e in edges_of(m, modules)}
    return modules, sorted(edges, key=lambda e: (e.src, e.line, e.dst))


# ---------------------------------------------------------------------------------------------------
# Layers


def load_layers() -> tuple[list[dict], dict]:
    data = yaml.safe_load(LAYERS_FILE.read_text(encoding="utf-8"))
    return data["layers"], data.get("separate", {})


def layer_of(module: str, layers: list[dict]) -> tuple[int, str] | None:
    """(index from the bottom, prefix) of the longest declared prefix that covers the module."""
    best: tuple[int, str] | None = None
    for index, layer in enumerate(layers):
        for prefix in layer["modules"]:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (index, prefix)
    return best


def upward_imports(edges: list[Edge]) -> list[str]:
    layers, separate = load_layers()
    names = [layer["name"] for layer in layers]
    problems = []
    for e in edges:
        src_root, dst_root = e.src.split(".")[0], e.dst.split(".")[0]
        if src_root in separate:
            if dst_root == src_root:
                continue
            allowed = {names.index(n) for n in separate[src_root]["may_import"]}
            dst = layer_of(e.dst, layers)
            if dst is None or dst[0] not in allowed:
                where = names[dst[0]] if dst else "no layer"
                problems.append(
                    f"{e.src} (line {e.line}, {e.how}) -> {e.dst}: {src_root}/ may import only "
                    f"{separate[src_root]['may_import']} of osum_data, this is {where}"
                )
            continue
        if dst_root in separate:
            src = layer_of(e.src, layers)
            launchers = {names.index(n) for n in separate[dst_root].get("launched_by", [])}
            if e.how == "string" and src and src[0] in launchers:
                continue  # `python -m training.train` in a subprocess: a process, not an import
            problems.append(f"{e.src} (line {e.line}, {e.how}) -> {e.dst}: osum_data imports {dst_root}/")
            continue
        src, dst = layer_of(e.src, layers), layer_of(e.dst, layers)
        if src and dst and dst[0] > src[0]:
            problems.append(
                f"{e.src} [{names[src[0]]}] (line {e.line}, {e.how}) -> {e.dst} [{names[dst[0]]}]: "
                "upward import"
            )
    return sorted(problems)


def cycles(modules: dict[str, Module], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one example circle."""
    succ: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        succ[e.src].add(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        nonlocal counter
        work = [(root, iter(sorted(succ[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return sorted(components)


def _circle(component: list[str], succ: dict[str, set[str]]) -> list[str]:
    """One concrete circle through the component's first module (breadth-first back to it)."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(succ[node] & members):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return component


# ---------------------------------------------------------------------------------------------------
# Tests


def test_every_module_has_a_layer():
    modules, _ = graph()
    layers, separate = load_layers()
    loose = [m for m in modules if m.split(".")[0] not in separate and layer_of(m, layers) is None]
    assert not loose, f"modules in no layer of {LAYERS_FILE.name}: {loose}"


def test_no_import_circles():
    modules, edges = graph()
    found = cycles(modules, edges)
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.src, set()).add(e.dst)
    lines = []
    for component in found:
        circle = " -> ".join(_circle(component, succ))
        edges_in = sorted(f"  {e.src}:{e.line} ({e.how}) -> {e.dst}" for e in edges
                          if e.src in component and e.dst in component)
        lines += [f"{len(component)} modules {component}, e.g. {circle}"] + edges_in
    report = "\n".join(lines)
    assert not found, f"{len(found)} import circle(s) between modules:\n{report}"


def test_no_upward_imports():
    _, edges = graph()
    problems = upward_imports(edges)
    report = "\n".join(problems)
    assert not problems, f"{len(problems)} import(s) against docs/layers.yaml:\n{report}"


def test_layout_page_shows_the_layers_in_order():
    """docs/layout.md's layer table lists the layers of docs/layers.yaml, top to bottom."""
    layers, _ = load_layers()
    text = (REPO / "docs" / "layout.md").read_text(encoding="utf-8")
    shown = re.findall(r"^\| *\d+ *\| *`?([\w-]+)`? *\|", text, flags=re.M)
    assert shown == [layer["name"] for layer in reversed(layers)], shown


# ---------------------------------------------------------------------------------------------------
# The checker itself must see what it claims to see (so a green run means something).


def _fake(tmp_name: str, source: str, is_package: bool = False) -> Module:
    return Module(tmp_name, REPO / "x.py", is_package, ast.parse(source))


def test_checker_sees_function_level_importlib_and_string_imports():
    modules, _ = graph()
    mod = _fake(
        "osum_data.llm.fake",
        "def f():\n    from osum_data.run import stage\n"
        "import importlib\nimportlib.import_module('osum_data.mix.plan')\n"
        "MODULES = ['osum_data.label.text_normalize']\n"
        "ENTRY_POINT_GROUP = 'osum_data.mix'\nentry_points(group='osum_data.report')\n",
    )
    got = {(e.dst, e.how) for e in edges_of(mod, modules)}
    assert ("osum_data.run.stage", "import") in got
    assert ("osum_data.mix.plan", "importlib") in got
    assert ("osum_data.label.text_normalize", "string") in got
    assert not {dst for dst, _ in got} & {"osum_data.mix", "osum_data.report"}  # entry-point groups
    assert any("upward import" in p for p in upward_imports(edges_of(mod, modules)))


def test_checker_finds_a_circle():
    modules = {
        name: _fake(name, src)
        for name, src in {
            "osum_data.a": "from osum_data import b",
            "osum_data.b": "import osum_data.c",
            "osum_data.c": "def f():\n    from osum_data.a import x",
        }.items()
    }
    edges = [e for m in modules.values() for e in edges_of(m, modules)]
    found = cycles(modules, edges)
    assert found == [["osum_data.a", "osum_data.b", "osum_data.c"]]
    succ = {e.src: {e.dst} for e in edges}
    assert _circle(found[0], succ) == ["osum_data.a", "osum_data.b", "osum_data.c", "osum_data.a"]
