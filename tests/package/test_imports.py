"""The package's import graph has no cycle: counting imports at module level and inside functions."""

import ast
from pathlib import Path

import resnets

PACKAGE = Path(resnets.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The resnets modules that `path` imports anywhere in its text (a package import names its __init__)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    # A package's __init__ re-exports its modules; importing a module runs its package's __init__ first,
    # but that is Python's loading order, not a dependency of the module on its siblings.
    return {m: {t for t in targets if not (m.startswith(t + ".") and t != "resnets")} for m, targets in graph.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_imports_itself_back():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def own_import(node: ast.AST) -> bool:
    """Whether `node` imports one of the package's own modules."""
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").startswith("resnets")
    return isinstance(node, ast.Import) and any(alias.name.startswith("resnets") for alias in node.names)


def test_imports_inside_functions_are_only_of_optional_packages():
    # Inside a function, an import of the package's own modules would only hide a cycle.
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found += [f"{path.relative_to(PACKAGE)}:{n.lineno}" for n in ast.walk(node) if own_import(n)]
    assert found == [], "imports of the package inside functions: " + ", ".join(found)


# The package's layers, lowest first: a module imports only from its own layer and those below.
LAYERS = (
    {"errors", "files", "text", "paper", "hardware"},
    {"resnets", "models", "data"},  # resnets: the package's __init__ (the model registry's names)
    {"export"},
    {"train", "trained"},  # a training run, and a trained run read back
    {"analysis", "inference"},
    {"experiments"},
    {"report"},
    {"commands"},
    {"cli", "launch", "__main__"},  # launch: --help without torch, then cli
)


def part_of(module: str) -> str:
    """The package's top-level part a module belongs to: resnets.train.engine -> train."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "resnets"


def test_no_module_imports_a_layer_above_its_own():
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    graph = import_graph()
    assert {part_of(m) for m in graph} == set(layer), "a part of the package is in no layer"
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer[part_of(t)] > layer[part_of(m)]]
    assert upward == [], "upward imports: " + ", ".join(sorted(upward))


def test_analysis_reads_trained_runs_without_the_training_code():
    graph = import_graph()
    found = [f"{m} -> {t}" for m, ts in graph.items() if part_of(m) == "analysis" for t in ts if part_of(t) == "train"]
    assert found == []


def test_the_layout_keeps_each_file_to_one_job():
    """The engine runs a training, cli.py registers commands, and no function runs past 80 lines."""
    lines = {path: path.read_text().splitlines() for path in PACKAGE.rglob("*.py")}
    assert len(lines[PACKAGE / "train" / "engine.py"]) < 600
    assert len(lines[PACKAGE / "cli.py"]) < 250
    long = [
        f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, text in lines.items()
        for node in ast.walk(ast.parse("\n".join(text)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80
    ]
    assert long == [], "functions over 80 lines: " + ", ".join(long)
