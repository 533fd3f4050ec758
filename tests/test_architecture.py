"""The import layers of docs/architecture.md, checked on the source (no import is executed):

    cli -> orchestration -> methods -> reports -> core (data, core, training, evaluation, tasks) -> plumbing

A module imports only from its own layer or the layers below; the core never imports a method or the
reports; no two first-party modules import each other (directly or around a longer loop), and no two
core packages depend on each other; function-local imports are for heavy third-party packages only (and
for our two modules that exist to subclass one: `HEAVY_BOUNDARIES`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject's `package-dir`).
PACKAGES = {"harness": "harness", "methods": "harness.methods", "reports": "harness.reports", "tasks": "harness.tasks"}

# (layer, prefixes): a module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "plumbing", ("harness.plumbing",)),
    (1, "core", ("harness", "harness.data", "harness.core", "harness.training", "harness.evaluation", "harness.tasks")),
    (2, "reports", ("harness.reports",)),
    (3, "methods", ("harness.methods",)),
    (4, "orchestration", ("harness.orchestration",)),
    (5, "cli", ("harness.cli",)),
]
CORE_PACKAGES = ("harness.data", "harness.core", "harness.training", "harness.evaluation", "harness.tasks")

# Third-party packages slow enough to import that a function may import them where it needs them.
HEAVY = {"torch", "transformers", "lm_eval", "matplotlib", "accelerate", "datasets", "peft", "safetensors",
         "huggingface_hub", "gguf", "deepspeed", "evaluate", "sacrebleu", "langdetect"}  # fmt: skip
# Our modules that subclass a heavy third-party class at import time (transformers' Trainer: ~6 s; lm-eval's
# HFLM: ~3 s): imported where used, so that `harness --help` does not pay for them.
HEAVY_BOUNDARIES = {"harness.methods.cc.trainer": "transformers", "harness.methods.cc.lm": "lm_eval"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[parts[0]], *parts[1:]])


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def resolve(name: str) -> str | None:
    """The first-party module an import names (`harness.core.config.RunConfig` -> `harness.core.config`)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(path: Path) -> list[tuple[str, int, str]]:
    """(imported name, line, where): where is "module", "type" (under TYPE_CHECKING) or "function"."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    visit_one(sub, "type")
                for sub in child.orelse:
                    visit_one(sub, where)
            else:
                visit_one(child, where)

    def visit_one(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, where) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if resolve(full) == full else node.module, node.lineno, where))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            visit(node, "function")
        else:
            visit(node, where)

    visit(tree, "module")
    return found


def layer_of(module: str) -> tuple[int, str]:
    best = max(((len(p), layer, name) for layer, name, prefixes in LAYERS for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)  # fmt: skip
    assert best is not None, f"{module}: in no layer of LAYERS"
    return best[1], best[2]


def first_party_edges(kinds: tuple[str, ...]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _, where in imports(path):
            target = resolve(name)
            if target and target != module and where in kinds:
                edges[module].add(target)
    return edges


def test_every_module_is_in_a_layer() -> None:
    assert len(MODULES) > 60
    for module in MODULES:
        layer_of(module)


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for module, path in MODULES.items():
        mine, my_name = layer_of(module)
        for name, line, _ in imports(path):
            target = resolve(name)
            if target is None:
                continue
            theirs, their_name = layer_of(target)
            if theirs > mine:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {my_name} imports {their_name} ({target})")
    assert not wrong, "\n".join(wrong)


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_no_module_cycles() -> None:
    cycle = cycle_in(first_party_edges(("module", "function")))
    assert cycle is None, " -> ".join(cycle)


def test_core_packages_do_not_depend_on_each_other_both_ways() -> None:
    def package(module: str) -> str | None:
        return next((p for p in CORE_PACKAGES if module == p or module.startswith(p + ".")), None)

    graph: dict[str, set[str]] = {p: set() for p in CORE_PACKAGES}
    for module, targets in first_party_edges(("module", "function", "type")).items():
        if (mine := package(module)) is None:
            continue
        graph[mine] |= {p for t in targets if (p := package(t)) not in (None, mine)}
    cycle = cycle_in(graph)
    assert cycle is None, " -> ".join(cycle)


def test_function_local_imports_only_for_heavy_packages() -> None:
    wrong = []
    for _module, path in MODULES.items():
        for name, line, where in imports(path):
            if where != "function":
                continue
            target = resolve(name)
            if target is not None and target not in HEAVY_BOUNDARIES:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (first-party)")
            elif target is None and name.split(".")[0] not in HEAVY:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (not a heavy package)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module,package", sorted(HEAVY_BOUNDARIES.items()))
def test_heavy_boundaries_really_import_their_package_at_module_level(module: str, package: str) -> None:
    names = [name for name, _, where in imports(MODULES[module]) if where == "module"]
    assert any(name.split(".")[0] == package for name in names)


def test_core_and_reports_name_no_method() -> None:
    """What the core and the reports need of a method comes through `harness.core.method.Method`."""
    hits = []
    for module, path in MODULES.items():
        if layer_of(module)[1] not in ("plumbing", "core", "reports", "orchestration", "cli"):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if '"cc"' in line or "cc.safetensors" in line or "cc_artifacts" in line:
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_no_file_over_about_400_lines() -> None:
    files = [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py"))]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}  # fmt: skip
    assert not long, long
