"""``segops synth``: deterministic synthetic archives for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.models import OptionInfo

from segops.cli.common import out

synth_app = typer.Typer(no_args_is_help=True, help="Write deterministic synthetic archives (for demos and tests).")

# Options the synth commands share (typer's Annotated style: the default stays in each signature).
_Seed = Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")]


def _count(items: str) -> OptionInfo:
    """``--count``: how many ``items`` (images, photos, slices) an archive holds; at least one."""
    return typer.Option(min=1, help=f"Number of {items}.")


def _share(of_what: str) -> OptionInfo:
    """A fraction in [0, 1], e.g. ``--defect-free``: the share of photos without a defect."""
    return typer.Option(min=0.0, max=1.0, help=f"Share of {of_what}.")


@synth_app.command("ct")
def synth_ct(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and labels/ into.")],
    series: Annotated[int, typer.Option(min=1, help="Number of CT series.")] = 6,
    slices: Annotated[int, typer.Option(min=1, help="Slices per series.")] = 20,
    seed: _Seed = 0,
) -> None:
    """CT-like DICOM series with ellipsoid lesions and one mask PNG per slice."""
    from segops.synth import make_ct_archive

    summary = make_ct_archive(out_dir, series=series, slices=slices, seed=seed)
    out.print(
        f"wrote {summary.n_images} DICOM slices to {summary.images} ({summary.n_foreground} with lesion), "
        f"masks in {summary.labels}"
    )


@synth_app.command("inspection")
def synth_inspection(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/ and labels/ into.")],
    count: Annotated[int, _count("images")] = 40,
    seed: _Seed = 0,
    rgb_fraction: Annotated[float, _share("RGB (vs gray) images")] = 0.5,
) -> None:
    """Textured surface photos with scratches and blobs, and binary mask PNGs."""
    from segops.synth import make_inspection_archive

    summary = make_inspection_archive(out_dir, count=count, seed=seed, rgb_fraction=rgb_fraction)
    out.print(
        f"wrote {summary.n_images} images to {summary.images} ({summary.n_foreground} with defects), masks in "
        f"{summary.labels}"
    )


@synth_app.command("defects")
def synth_defects(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for <kind>/part-NNNN.jpg + .png masks, README.png, dataset.jpg.")
    ],
    count: Annotated[int, _count("photos")] = 60,
    size: Annotated[int, typer.Option(min=32, help="Largest side in pixels (sides vary from 2/3 of it up).")] = 96,
    seed: _Seed = 0,
    defect_free: Annotated[float, _share("photos without a defect")] = 0.7,
) -> None:
    """Grayscale JPEG surface photos with rare defects (0.2-24 % of the area), anti-aliased mask PNG beside each."""
    from segops.synth import make_defect_archive

    summary = make_defect_archive(out_dir, count=count, seed=seed, size=size, defect_free=defect_free)
    out.print(
        f"wrote {summary.n_images} photos to {summary.images} ({summary.n_foreground} with defects), "
        "each mask beside its image (binarise at 128)"
    )


@synth_app.command("instances")
def synth_instances(
    out_dir: Annotated[Path, typer.Argument(help="Folder for images/, instances/, classes/, annotations.json.")],
    count: Annotated[int, _count("images")] = 40,
    size: Annotated[int, typer.Option(min=48, help="Image height and width in pixels.")] = 128,
    seed: _Seed = 0,
    classes: Annotated[int, typer.Option(min=1, max=3, help="Object classes: 1 cell, 2 + rod, 3 + ring.")] = 2,
) -> None:
    """Microscopy-like scenes of touching and overlapping objects, with instance-id PNGs, class PNGs and COCO JSON."""
    from segops.synth import make_instance_archive

    summary = make_instance_archive(out_dir, count=count, size=size, seed=seed, classes=classes)
    out.print(
        f"wrote {summary.n_images} images with {summary.n_instances} objects ({', '.join(summary.class_names)}) to "
        f"{summary.images}; instance ids in {summary.instances}, classes in {summary.classes}, COCO in "
        f"{summary.annotations}"
    )


@synth_app.command("membranes")
def synth_membranes(
    out_dir: Annotated[Path, typer.Argument(help="Folder for images/<k>.png and labels/<k>.png.")],
    count: Annotated[int, _count("slices")] = 10,
    size: Annotated[int, typer.Option(min=32, help="Slice height and width in pixels.")] = 128,
    seed: _Seed = 0,
) -> None:
    """EM-like cell tilings with dark membranes, labelled as ISBI 2012 (0 = membrane, 255 = interior)."""
    from segops.synth import make_membrane_archive

    summary = make_membrane_archive(out_dir, count=count, size=size, seed=seed)
    out.print(f"wrote {summary.n_images} slices to {summary.images}, labels in {summary.labels}")
