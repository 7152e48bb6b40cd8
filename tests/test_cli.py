import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from segops.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

BAD = """
name: bad
steps:
  - step: ingest
    source: {kind: dicom, path: /nowhere}
  - step: train
    model: {arch: unett}
    epochs: -1
"""


def test_validate_ok(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # quickstart.yaml reads data/quickstart-ct/..., which `segops synth ct` writes
    for folder in ("images", "labels"):
        (tmp_path / "data" / "quickstart-ct" / folder).mkdir(parents=True)
    result = runner.invoke(app, ["validate", str(REPO / "workflows" / "quickstart.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "ingest, train, segment" in result.output


def test_validate_names_paths_that_do_not_exist(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", str(REPO / "workflows" / "quickstart.yaml")])
    assert result.exit_code == 2
    note = f"does not exist (relative paths are resolved from the current folder, {tmp_path})"
    assert "2 problem(s)" in result.output
    assert f"steps[0].source.path: data/quickstart-ct/images {note}" in result.output
    assert f"steps[0].source.labels.path: data/quickstart-ct/labels {note}" in result.output


def test_validate_reports_duplicate_keys_with_lines(tmp_path: Path) -> None:
    wf = tmp_path / "dup.yaml"
    wf.write_text(BAD.replace("epochs: -1", "epochs: -1\n    model: {arch: unet}"))
    result = runner.invoke(app, ["validate", str(wf)])
    assert result.exit_code == 2
    assert "steps[1].model: duplicate key (lines 7 and 9); keep one" in result.output
    assert "steps[1].epochs: Input should be greater than or equal to 1" in result.output


def test_files_that_are_not_workflow_text_exit_2_with_one_problem(tmp_path: Path) -> None:
    from PIL import Image

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    png = tmp_path / "mask.png"
    Image.new("L", (8, 8)).save(png)
    expected = {
        latin1: "is not UTF-8 text (byte 0xe9 at offset 9, line 1); save it as UTF-8",
        png: "is a PNG image (NUL byte at offset 8), not YAML text; pass the workflow's .yaml file",
        tmp_path: "is a folder; pass the workflow's .yaml file",
        tmp_path / "nope.yaml": "does not exist",
    }
    for path, problem in expected.items():
        result = runner.invoke(app, ["validate", str(path)])
        assert result.exit_code == 2, (path, result.output)
        assert f"invalid workflow {path}: 1 problem(s)" in result.output
        assert f"<file>: cannot read workflow file: {path} {problem}" in result.output
    # `run` reads the file once, through the same check (in a subprocess: it sets up logging)
    proc = subprocess.run(
        [sys.executable, "-m", "segops.cli", "run", str(latin1)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{latin1} {expected[latin1]}" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text(BAD)
    result = runner.invoke(app, ["validate", str(wf)])
    assert result.exit_code == 2
    assert "2 problem(s)" in result.output
    assert "steps[1].model.arch: 'unett' is not one of unet" in result.output
    assert "steps[1].epochs: Input should be greater than or equal to 1" in result.output


def test_run_rejects_bad_file_before_importing_ray_or_torch(tmp_path: Path) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text(BAD)
    code = (
        "import sys\n"
        "from segops.cli import app\n"
        "try:\n"
        f"    app([{'run'!r}, {str(wf)!r}])\n"
        "except SystemExit as exc:\n"
        "    print('EXIT', exc.code, 'ray' in sys.modules, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "EXIT 2 False False" in proc.stdout, proc.stdout + proc.stderr
    assert "steps[1].model.arch" in proc.stderr


def test_synth_commands(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "ct", str(tmp_path / "ct"), "--series", "1", "--slices", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ct" / "images").rglob("*.dcm"))) == 2
    result = runner.invoke(app, ["synth", "inspection", str(tmp_path / "insp"), "--count", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "insp" / "labels").glob("*.png"))) == 3


def test_synth_instances_command(tmp_path: Path) -> None:
    args = ["synth", "instances", str(tmp_path / "inst"), "--count", "2", "--size", "64", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 images with" in result.output and "(cell, rod)" in result.output
    for folder in ("images", "instances", "classes"):
        assert sorted(p.name for p in (tmp_path / "inst" / folder).iterdir()) == ["scene-0000.png", "scene-0001.png"]
    coco = json.loads((tmp_path / "inst" / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["scene-0000.png", "scene-0001.png"]
    result = runner.invoke(app, ["synth", "instances", str(tmp_path / "x"), "--classes", "4"])
    assert result.exit_code == 2 and not (tmp_path / "x").exists()


def test_census_command_counts_pydicom_files() -> None:
    import pydicom

    folder = Path(pydicom.data.__file__).parent / "test_files"
    proc = subprocess.run(
        [sys.executable, "-m", "segops.cli", "census", str(folder), "--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "census of" in proc.stdout and "JPEG Baseline (Process 1)" in proc.stdout
    assert "RT Plan" not in proc.stdout and "skipped" in proc.stdout
    # Ray started quietly: not even the C++ core's note that segops set its log level
    assert "RAY_BACKEND_LOG_LEVEL" not in proc.stderr and "logging.cc" not in proc.stderr, proc.stderr
