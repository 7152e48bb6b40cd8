"""Architecture rule: only segops/cluster imports Ray, only segops/tracking/ imports MLflow."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segops"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _offenders(module: str, allowed) -> list[str]:
    return sorted(
        str(p.relative_to(PACKAGE.parent))
        for p in PACKAGE.rglob("*.py")
        if module in _imports(p) and not allowed(p.relative_to(PACKAGE))
    )


def test_only_cluster_imports_ray() -> None:
    assert _offenders("ray", lambda rel: rel.parts[0] == "cluster") == []


def test_only_tracking_imports_mlflow() -> None:
    assert _offenders("mlflow", lambda rel: rel.parts[0] == "tracking") == []


def test_the_rule_detects_violations(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import ray.data\nfrom mlflow.tracking import MlflowClient\n")
    assert {"ray", "mlflow"} <= _imports(bad)


def test_no_bare_print_or_unsafe_torch_load_in_library_code() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "cli":  # the command line prints through rich's console, not print()
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                raise AssertionError(f"bare print() in {path}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "load"
                and getattr(node.func.value, "id", None) == "torch"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                assert ok, f"torch.load without weights_only=True in {path}:{node.lineno}"
