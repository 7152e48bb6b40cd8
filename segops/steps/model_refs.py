"""Model references in workflow files: checkpoint folders and MLflow model URIs, resolved one way.

``models:/name@alias`` is pinned to the version the alias points at when a step starts, so
lineage and evaluation evidence name exactly which version was used, even if the alias moves.
Every step that loads a model (train's ``init_from``, segment, evaluate) resolves it here.
"""

from __future__ import annotations

from pathlib import Path

from segops.errors import StepError
from segops.steps.context import RunContext
from segops.steps.results import TrainResult
from segops.tracking import download_checkpoint, is_model_uri

#: What a reference resolves to: ``ref`` as written and the ``uri`` used to fetch it; registered
#: models add ``name`` and ``version`` (then ``uri`` is ``models:/name/<version>``).
Identity = dict[str, str]


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` → (name, "3", None); ``models:/name@champion`` → (name, None, "champion").

    Raises:
        StepError: ``uri`` is not ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
    """
    body = uri[len("models:/") :] if uri.startswith("models:/") else ""
    if "@" in body:
        name, alias = body.split("@", 1)
        version = None
    else:
        name, _, version = body.rpartition("/")
        alias = None
    if not name or not (alias or version):
        raise StepError(f"{uri!r} is not a registered model reference: expected models:/<name>/<version> or @<alias>")
    return name, version, alias


def pin(ref: str, ctx: RunContext) -> Identity | None:
    """Identity of a reference: ``ref`` and, for registered models, ``name``, ``version`` and the
    pinned ``uri`` (``models:/name/<version>``). None when ``ref`` is an alias that does not exist."""
    if not ref.startswith("models:/"):
        return {"ref": ref, "uri": ref}
    name, version, alias = parse_models_uri(ref)
    if alias is not None:
        version = ctx.tracker.alias_version(name, alias)
        if version is None:
            return None
    return {"ref": ref, "name": name, "version": str(version), "uri": f"models:/{name}/{version}"}


def checkpoint_for(ref: str, ctx: RunContext, folder: str) -> tuple[Path, Identity]:
    """(local checkpoint folder, identity) of a model reference; a model URI is downloaded (by its
    pinned version) into ``<run folder>/<folder>``, anything else is a local checkpoint folder."""
    identity = pin(ref, ctx)
    if identity is None:
        raise StepError(f"{ref} does not exist (no model version has that alias)")
    uri = identity["uri"]
    path = download_checkpoint(uri, ctx.spec.tracking.uri, ctx.run_dir / folder) if is_model_uri(uri) else Path(uri)
    return path, identity


def trained_checkpoint(ctx: RunContext, step: str, role: str = "model") -> tuple[Path, Identity]:
    """(checkpoint folder, identity) of the model a train step earlier in this run wrote; the
    identity names its registered version (``name``, ``version``, ``uri``) when it was registered.

    Raises:
        StepError: no train step ran before ``step`` (the message names the ``role`` not given).
    """
    train = ctx.require(TrainResult, f"{step}: no {role} given and no train step before this one")
    identity = {"ref": str(train.checkpoint)}
    if train.registered is not None:
        name, version = train.registered
        identity |= {"name": name, "version": str(version), "uri": f"models:/{name}/{version}"}
    return train.checkpoint, identity


def step_checkpoint(
    ref: str | None, ctx: RunContext, step: str, folder: str, role: str = "model"
) -> tuple[Path, Identity]:
    """(checkpoint folder, identity) of the model a step names (downloaded into ``folder``), or of
    this run's trained model when it names none (``ref`` None)."""
    return trained_checkpoint(ctx, step, role) if ref is None else checkpoint_for(ref, ctx, folder)
