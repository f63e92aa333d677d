"""The layer graph of src/openjepa: imports only go down (or sideways within a floor), never up, no cycles.

Floors, from the ground up (a module may import its own floor and the floors below):

    0  config, rng, runtime, utils
    1  models, masks, losses, data
    2  methods
    3  train, eval, diagnostics      (train imports neither eval nor diagnostics: they reach the trainer
                                      as callbacks)
    4  interop, viz
    5  api, cli, and the package's own __init__

Every import counts, also those inside functions and under ``TYPE_CHECKING``, found by walking the AST.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "openjepa"

FLOORS = {
    **dict.fromkeys(("config", "rng", "runtime", "utils"), 0),
    **dict.fromkeys(("models", "masks", "losses", "data"), 1),
    "methods": 2,
    **dict.fromkeys(("train", "eval", "diagnostics"), 3),
    **dict.fromkeys(("interop", "viz"), 4),
    **dict.fromkeys(("api", "cli", "__init__"), 5),
}
FORBIDDEN = {("train", "eval"), ("train", "diagnostics")}  # same floor, but not allowed


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported openjepa module, line, only for type checking)`` of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(n) for n in ast.walk(node)}
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            names = [base.strip(".")]
        found += [(n, node.lineno, id(node) in type_only) for n in names if n.split(".")[0] == "openjepa"]
    return found


def _floor_key(module: str) -> str:
    """The floor-deciding part of a module name: ``openjepa.train.trainer`` → ``train``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_is_on_a_floor():
    unplaced = sorted({_floor_key(m) for m in _graph()} - set(FLOORS))
    assert not unplaced, f"packages or modules without a floor in tests/test_layers.py: {unplaced}"


def test_no_import_goes_up_a_floor():
    violations = []
    for module, imports in _graph().items():
        here = _floor_key(module)
        for target, line, _ in imports:
            there = _floor_key(target)
            if there not in FLOORS:
                violations.append(f"{module}:{line} imports {target}, which has no floor")
            elif FLOORS[there] > FLOORS[here] or (here, there) in FORBIDDEN:
                violations.append(
                    f"{module}:{line} ({here}, floor {FLOORS[here]}) imports {target} ({there})"
                )
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imports in _graph().items():
        for target, _, _ in imports:
            a, b = _floor_key(module), _floor_key(target)
            if a != b:
                edges[a].add(b)
    assert _find_cycle(edges) is None, (
        f"import cycle between packages: {' → '.join(_find_cycle(edges) or [])}"
    )


def test_no_runtime_import_cycle_between_modules():
    graph = _graph()
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imports in graph.items():
        for target, _, type_only in imports:
            # `from openjepa.x import y` may name a module y or an attribute of x: take the longest module
            while target not in graph and "." in target:
                target = target.rsplit(".", 1)[0]
            if not type_only and target != module:
                edges[module].add(target)
    assert _find_cycle(edges) is None, f"import cycle: {' → '.join(_find_cycle(edges) or [])}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from openjepa.eval.knn import knn_classify\n", "imports openjepa.eval.knn (eval)"),
        ("def f():\n    from openjepa.api import pretrain\n", "imports openjepa.api (api)"),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, expected):
    """A fake tree where train imports upwards: the check must fail and name the import."""
    fake = tmp_path / "openjepa"
    (fake / "train").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "train" / "__init__.py").write_text("")
    (fake / "train" / "x.py").write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", fake)
    with pytest.raises(AssertionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        test_no_import_goes_up_a_floor()
