"""Model references in workflow files: checkpoint folders and MLflow model URIs.

``models:/name@alias`` is pinned to the version the alias points at when a step starts, so
lineage and evaluation evidence name exactly which version was used, even if the alias moves.
"""

from __future__ import annotations

from pathlib import Path

from segops.errors import StepError
from segops.steps.context import RunContext
from segops.tracking import download_checkpoint, is_model_uri


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` → (name, "3", None); ``models:/name@champion`` → (name, None, "champion")."""
    body = uri[len("models:/") :]
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, None, alias
    name, _, version = body.rpartition("/")
    return name, version, None


def pin(ref: str, ctx: RunContext) -> dict[str, str] | None:
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


def checkpoint_for(ref: str, ctx: RunContext, folder: str) -> tuple[Path, dict[str, str]]:
    """(local checkpoint folder, identity) of a model reference (downloaded into ``folder``)."""
    identity = pin(ref, ctx)
    if identity is None:
        raise StepError(f"{ref} does not exist (no model version has that alias)")
    uri = identity["uri"]
    path = download_checkpoint(uri, ctx.spec.tracking.uri, ctx.run_dir / folder) if is_model_uri(uri) else Path(uri)
    return path, identity
