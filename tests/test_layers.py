"""Architecture rules over segops' own import graph: layer order, no cycle, module size, independent steps.

Every ``import`` and ``from … import`` in every module under ``segops/`` counts: at module level,
inside functions (a function-level import climbs the layers just as much, only later) and under
``if TYPE_CHECKING:``; relative imports are resolved. The layer of a module is the layer of its
top-level name under ``segops/`` (``segops/data/labels.py`` is ``data``), placed in :data:`PLACES`.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segops"
MAX_LINES = 500

# Top-level name under segops/ -> (layer, group), bottom layer 0. The rule: a module may import any
# module of a lower layer and any module of its own group; groups that share a layer (data, models,
# losses and metrics; cluster and tracking; cli and synth) do not import each other, except the pairs
# in SIBLING_IMPORTS. A name missing here fails the test, so a new top-level module gets placed.
PLACES: dict[str, tuple[int, str]] = {
    "__init__": (0, "base"),  # segops/__init__.py: the version string only
    "errors": (0, "base"),  # exception classes every layer raises
    "config": (1, "config"),  # pydantic specs and YAML loading
    "data": (2, "data"),  # decode, labels, records, transforms, fingerprint
    "models": (2, "models"),  # model builders
    "losses": (2, "losses"),  # loss functions
    "metrics": (2, "metrics"),  # Dice / IoU math over arrays
    "instance_metrics": (2, "metrics"),  # instance matching and AP math over arrays
    "compare": (2, "metrics"),  # paired per-case statistics and the promotion gate (config and errors only)
    "engine": (3, "engine"),  # plain torch loops: train steps, per-case inference
    "outputs": (4, "outputs"),  # atomic writers, reports, manifest
    "cluster": (5, "cluster"),  # the only Ray importer
    "tracking": (5, "tracking"),  # the only MLflow importer
    "audit": (6, "audit"),  # reports over tracked runs: reads tracking, data and outputs, never steps
    "steps": (7, "steps"),  # ingest, plan, train, segment, evaluate, promote
    "workflows": (8, "workflows"),  # runner: steps in order, manifest, resume
    "cli": (9, "cli"),  # typer app
    "synth": (9, "synth"),  # synthetic archive generators: above the core, beside the CLI
}
# (importer group, imported group) pairs allowed within one layer.
SIBLING_IMPORTS: set[tuple[str, str]] = {("cli", "synth")}  # the `segops synth` commands call the generators
# Step modules every step may import: shared step helpers (run context, model references, the typed
# step results later steps read, the inference actors' memory request, the drift check segment runs
# first and `segops drift` runs alone), not steps.
STEP_HELPERS = {
    "segops.steps.context",
    "segops.steps.model_refs",
    "segops.steps.results",
    "segops.steps.actor_memory",
    "segops.steps.drift",
}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` (a module) imports ``name``, found in ``target`` (a module)."""

    source: str
    path: Path
    line: int
    target: str
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.name}"


def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package`` (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str:
    """The longest known module that ``name`` (a module, or a module's attribute) lies in."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@functools.cache
def _imports(package: Path) -> tuple[Import, ...]:
    """Every import of a module of ``package`` by a module of ``package``, function-level ones included."""
    return tuple(_scan(package))


def _scan(package: Path) -> Iterator[Import]:
    modules = _modules(package)
    root = package.name
    for source, path in modules.items():
        rel = path.relative_to(package.parent)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name == root or name.startswith(root + "."):
                    yield Import(source, rel, node.lineno, _known(name, modules), name)


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer_violations(package: Path) -> list[str]:
    problems = []
    for imp in _imports(package):
        src, dst = _top(imp.source), _top(imp.target)
        for top in (src, dst):
            if top not in PLACES:
                problems.append(f"{imp}: segops.{top} has no place in PLACES; add it to the layer table")
        if src not in PLACES or dst not in PLACES:
            continue
        (src_layer, src_group), (dst_layer, dst_group) = PLACES[src], PLACES[dst]
        if dst_layer > src_layer:
            problems.append(f"{imp}: layer {src_group} ({src_layer}) imports the higher {dst_group} ({dst_layer})")
        elif dst_layer == src_layer and src_group != dst_group and (src_group, dst_group) not in SIBLING_IMPORTS:
            problems.append(f"{imp}: {src_group} imports its sibling {dst_group} (same layer {src_layer})")
    return sorted(set(problems))


def _cycles(package: Path) -> list[str]:
    """One line per import cycle found, each edge as ``path:line imports name``."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in _imports(package):
        if imp.target != imp.source:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    done: set[str] = set()
    found = []

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            ring = stack[stack.index(module) :] + [module]
            found.append(" -> ".join(str(edges[a][b]) for a, b in zip(ring, ring[1:], strict=False)))
            return
        if module in done:
            return
        for target in sorted(edges.get(module, {})):
            visit(target, [*stack, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    return found


def _long_modules(package: Path) -> list[str]:
    lengths = {path: len(path.read_text().splitlines()) for path in sorted(package.rglob("*.py"))}
    return [
        f"{path.relative_to(package.parent)}: {n} lines > {MAX_LINES}" for path, n in lengths.items() if n > MAX_LINES
    ]


def _step_imports(package: Path) -> list[str]:
    steps = f"{package.name}.steps"
    return [
        str(imp)
        for imp in _imports(package)
        if imp.source.startswith(steps + ".")
        and imp.target.startswith(steps + ".")
        and imp.target != imp.source
        and imp.target not in STEP_HELPERS
    ]


def test_imports_follow_the_layer_order() -> None:
    problems = _layer_violations(PACKAGE)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    cycles = _cycles(PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_over_500_lines() -> None:
    long = _long_modules(PACKAGE)
    assert not long, "modules over the limit:\n" + "\n".join(long)


def test_steps_import_only_step_helpers() -> None:
    problems = _step_imports(PACKAGE)
    shared = ", ".join(sorted(STEP_HELPERS))
    assert not problems, f"steps importing other steps (only {shared} are shared):\n" + "\n".join(problems)


def test_the_rules_detect_violations(tmp_path: Path) -> None:
    package = tmp_path / "segops"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "config/__init__.py": "",
        "config/load.py": "def f():\n    from segops.data.instances import is_instance_labels\n",
        "data/__init__.py": "",
        "data/instances.py": "from ..errors import SegopsError\nfrom segops import models\n",
        "models/__init__.py": "",
        "engine/__init__.py": "",
        "engine/a.py": "from segops.engine import b\n",
        "engine/b.py": "import segops.engine.a\n" + "x = 1\n" * MAX_LINES,
        "steps/__init__.py": "",
        "steps/context.py": "",
        "steps/ingest.py": "",
        "steps/train.py": "from segops.steps.context import RunContext\nfrom .ingest import COLUMNS\n",
        "cli.py": "from segops.synth import make\n",
        "synth.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)

    edges = {(imp.source, imp.target) for imp in _imports(package)}
    assert ("segops.data.instances", "segops.errors") in edges  # a relative import, resolved
    assert _layer_violations(package) == [
        "segops/config/load.py:2 imports segops.data.instances.is_instance_labels:"
        " layer config (1) imports the higher data (2)",
        "segops/data/instances.py:2 imports segops.models: data imports its sibling models (same layer 2)",
    ]
    assert _cycles(package) == [
        "segops/engine/a.py:1 imports segops.engine.b -> segops/engine/b.py:1 imports segops.engine.a"
    ]
    assert _long_modules(package) == [f"segops/engine/b.py: {MAX_LINES + 1} lines > {MAX_LINES}"]
    assert _step_imports(package) == ["segops/steps/train.py:2 imports segops.steps.ingest.COLUMNS"]
