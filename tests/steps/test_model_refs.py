"""One model-reference resolver: parse ``models:/`` URIs, pin aliases to versions, fetch checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segops.engine.checkpoint import WEIGHTS_FILE
from segops.errors import StepError
from segops.steps.context import RunContext
from segops.steps.model_refs import checkpoint_for, parse_models_uri, pin, step_checkpoint, trained_checkpoint

from .contexts import make_context, tiny_checkpoint, trained

EXAMPLE = np.zeros((1, 1, 16, 16), np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunContext, list[Path]]:
    """A context whose registry holds ``tiny`` versions 1 and 2 (different weights), and their
    local checkpoint folders."""
    root = tmp_path_factory.mktemp("refs")
    ctx = make_context(root)
    folders = [tiny_checkpoint(root / f"v{seed + 1}", seed) for seed in (0, 1)]
    for folder in folders:
        ctx.tracker.log_model(folder, "tiny", EXAMPLE)
    return ctx, folders


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/liver/3", ("liver", "3", None)),
        ("models:/liver@champion", ("liver", None, "champion")),
        ("models:/team/liver/12", ("team/liver", "12", None)),
        ("models:/liver@release-2", ("liver", None, "release-2")),
    ],
)
def test_parse_models_uri(uri: str, parsed: tuple[str, str | None, str | None]) -> None:
    assert parse_models_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["models:/liver", "models:/liver/", "models:/@champion", "runs:/abc/model"])
def test_parse_models_uri_refuses_what_names_no_version(uri: str) -> None:
    with pytest.raises(StepError, match="is not a registered model reference: expected models:/<name>/<version>"):
        parse_models_uri(uri)


def test_pin_of_an_alias_names_the_version_it_pointed_at_and_stays_put(registry, tmp_path: Path) -> None:
    ctx, folders = registry
    ctx.tracker.set_alias("tiny", "pinned", "1")
    pinned = pin("models:/tiny@pinned", ctx)
    assert pinned == {"ref": "models:/tiny@pinned", "name": "tiny", "version": "1", "uri": "models:/tiny/1"}
    ctx.tracker.set_alias("tiny", "pinned", "2")  # the alias moves after the step pinned it
    assert pinned["uri"] == "models:/tiny/1"
    path, identity = checkpoint_for(pinned["uri"], ctx, "after-move")
    assert identity["version"] == "1"
    assert (path / WEIGHTS_FILE).read_bytes() == (folders[0] / WEIGHTS_FILE).read_bytes()
    assert pin("models:/tiny@pinned", ctx)["version"] == "2"  # a new pin follows the alias


def test_pin_of_a_version_a_folder_and_a_missing_alias(registry) -> None:
    ctx, _ = registry
    assert pin("models:/tiny/2", ctx) == {
        "ref": "models:/tiny/2",
        "name": "tiny",
        "version": "2",
        "uri": "models:/tiny/2",
    }
    assert pin("/data/ckpt", ctx) == {"ref": "/data/ckpt", "uri": "/data/ckpt"}
    assert pin("runs:/abc/model", ctx) == {"ref": "runs:/abc/model", "uri": "runs:/abc/model"}
    assert pin("models:/tiny@nobody", ctx) is None
    assert pin("models:/absent@champion", ctx) is None
    with pytest.raises(StepError, match=r"^models:/tiny@nobody does not exist \(no model version has that alias\)$"):
        checkpoint_for("models:/tiny@nobody", ctx, "missing")


def test_folder_version_and_alias_give_the_same_checkpoint_bytes(registry) -> None:
    ctx, folders = registry
    ctx.tracker.set_alias("tiny", "same", "2")
    local, local_id = checkpoint_for(str(folders[1]), ctx, "unused")
    by_version, version_id = checkpoint_for("models:/tiny/2", ctx, "by-version")
    by_alias, alias_id = checkpoint_for("models:/tiny@same", ctx, "by-alias")
    assert local == folders[1] and local_id == {"ref": str(folders[1]), "uri": str(folders[1])}
    assert by_version.is_relative_to(ctx.run_dir / "by-version") and by_alias.is_relative_to(ctx.run_dir / "by-alias")
    assert version_id["uri"] == alias_id["uri"] == "models:/tiny/2" and alias_id["ref"] == "models:/tiny@same"
    expected = (folders[1] / WEIGHTS_FILE).read_bytes()
    assert (by_version / WEIGHTS_FILE).read_bytes() == (by_alias / WEIGHTS_FILE).read_bytes() == expected
    assert expected != (folders[0] / WEIGHTS_FILE).read_bytes()  # the two versions differ: the check can fail


def test_trained_checkpoint_names_the_registered_version(registry) -> None:
    ctx, folders = registry
    ctx.results.append(trained(folders[0]))
    try:
        assert trained_checkpoint(ctx, "segment") == (folders[0], {"ref": str(folders[0])})
        ctx.results.append(trained(folders[0], ("tiny", "1")))
        expected = {"ref": str(folders[0]), "name": "tiny", "version": "1", "uri": "models:/tiny/1"}
        assert step_checkpoint(None, ctx, "segment", "unused") == (folders[0], expected)
        assert step_checkpoint("models:/tiny/1", ctx, "segment", "named")[1]["uri"] == "models:/tiny/1"
    finally:
        ctx.results.clear()
    with pytest.raises(StepError, match=r"^segment: no model given and no train step before this one$"):
        trained_checkpoint(ctx, "segment")
    with pytest.raises(StepError, match=r"^evaluate: no challenger given and no train step before this one$"):
        step_checkpoint(None, ctx, "evaluate", "unused", role="challenger")
