"""Aperio ImageScope XML labels (MoNuSeg's and MoNuSAC's outlines): each region type, holes, layer
names, instances, and ``segops plan`` finding them (files made here, no Ray)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.decode import decode_file, list_source_files
from segops.data.imagescope import imagescope_label, label_names, read_imagescope
from segops.data.instances import INSTANCE_STRIDE, split_instances
from segops.data.labels import build_resolver
from segops.data.pairing import detect
from segops.errors import LabelError, PlanError

H, W = 48, 64


def _region(kind: int, points: list[tuple[float, float]], negative: bool = False) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in points)
    return (
        f'<Region Id="1" Type="{kind}" Zoom="1" NegativeROA="{int(negative)}" Text="">'
        f"<Attributes/><Vertices>{vertices}</Vertices></Region>"
    )


def _layer(regions: list[str], name: str = "", attribute: tuple[str, str] = ("Description", "")) -> str:
    return (
        f'<Annotation Id="1" Name="{name}" Type="4" LineColor="65280"><Attributes>'
        f'<Attribute Name="{attribute[0]}" Id="0" Value="{attribute[1]}"/></Attributes>'
        f'<Regions><RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>'
        f"{''.join(regions)}</Regions><Plots/></Annotation>"
    )


def _xml(path: Path, layers: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0"?><Annotations MicronsPerPixel="0.2521">{"".join(layers)}</Annotations>')
    return path


def _square(x0: int, y0: int, x1: int, y1: int) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_region_types_holes_and_layer_names_are_drawn(tmp_path: Path) -> None:
    """MoNuSAC's layout: a layer per cell type named by its first attribute; a freehand polygon, a
    rectangle, an ellipse (two corners of its box) and a hole; an arrow and a ruler have no area."""
    epithelial = _layer(
        [
            _region(0, _square(2, 2, 20, 20)),
            _region(0, _square(6, 6, 12, 12), negative=True),  # a hole in the first region
            _region(3, [(30, 30), (40, 40)]),  # arrow
            _region(4, [(0, 47), (63, 47)]),  # ruler
        ],
        attribute=("Epithelial", ""),
    )
    lymphocyte = _layer(
        [_region(1, _square(30, 4, 40, 10)), _region(2, [(44, 20), (60, 36)])], attribute=("Lymphocyte", "")
    )
    path = _xml(tmp_path / "a.xml", [epithelial, lymphocyte])
    assert [(o.name, o.kind, o.negative) for o in read_imagescope(path)] == [
        ("Epithelial", 0, False),
        ("Epithelial", 0, True),
        ("Lymphocyte", 1, False),
        ("Lymphocyte", 2, False),
    ]
    classes = {"Epithelial": 1, "Lymphocyte": 2}
    label = imagescope_label(path, (H, W), classes, instances=False)
    expected = np.zeros((H, W), np.uint8)
    expected[2:21, 2:21] = 1
    expected[6:13, 6:13] = 0  # the hole, its outline included
    expected[4:11, 30:41] = 2
    expected_full = label.copy()
    ellipse = label[20:37, 44:61] == 2
    label[20:37, 44:61] = 0
    np.testing.assert_array_equal(label, expected)
    assert abs(int(ellipse.sum()) - np.pi * 8.5 * 8.5) < 0.08 * np.pi * 8.5 * 8.5  # a disc of radius ~8.5 px
    ids = imagescope_label(path, (H, W), classes, instances=True)
    masks, kinds = split_instances(ids)
    assert kinds.tolist() == [1, 2, 2] and [int(m.sum()) for m in masks[:2]] == [19 * 19 - 49, 7 * 11]
    assert imagescope_label(path, (H, W), {"Epithelial": 0, "Lymphocyte": 2}, instances=False).max() == 2
    with pytest.raises(LabelError, match="'Lymphocyte'.*lacks"):
        imagescope_label(path, (H, W), {"Epithelial": 1}, instances=False)
    # a layer of holes alone names no class: left out of the names, and it cuts nothing
    holes = _layer([_region(0, _square(30, 4, 40, 10), negative=True)], attribute=("Ambiguous", ""))
    with_holes = _xml(tmp_path / "holes.xml", [epithelial, lymphocyte, holes])
    assert label_names([with_holes]) == ["Epithelial", "Lymphocyte"]
    assert np.array_equal(imagescope_label(with_holes, (H, W), classes, instances=False), expected_full)


def test_layer_names_and_files_of_another_kind(tmp_path: Path) -> None:
    unnamed = _xml(tmp_path / "monuseg.xml", [_layer([_region(0, _square(1, 1, 5, 5))])])
    named = _xml(tmp_path / "named.xml", [_layer([_region(0, _square(1, 1, 5, 5))], name="Tumor")])
    valued = _xml(
        tmp_path / "valued.xml", [_layer([_region(0, _square(1, 1, 5, 5))], attribute=("Description", "gland"))]
    )
    assert [read_imagescope(p)[0].name for p in (unnamed, named, valued)] == ["object", "Tumor", "gland"]
    voc = tmp_path / "voc.xml"
    voc.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(LabelError, match="not an ImageScope XML file"):
        read_imagescope(voc)


def _monuseg(root: Path, count: int = 6, test: int = 2) -> None:
    """``Tissue Images/*.tif`` + ``Annotations/*.xml`` (nuclei, one layer), and a test folder holding
    each tile's ``.tif`` beside its ``.xml``."""
    rng = np.random.default_rng(0)
    for i in range(count + test):
        folder, notes = (root / "Tissue Images", root / "Annotations") if i < count else (root / "Test",) * 2
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"TCGA-{i:02d}.tif")
        nuclei = [_region(0, _square(4 + 12 * k, 6, 12 + 12 * k, 14)) for k in range(1 + i % 3)]
        _xml(notes / f"TCGA-{i:02d}.xml", [_layer(nuclei)])


def test_plan_finds_monuseg_outlines_and_ingest_reads_them(tmp_path: Path) -> None:
    _monuseg(tmp_path)
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert (d.pairing, d.task, d.classes, d.n_images, d.n_paired) == ("imagescope", "instance", 2, 6, 6)
    assert d.source["path"] == str(tmp_path / "Tissue Images")
    assert labels == {
        "kind": "imagescope",
        "path": str(tmp_path / "Annotations"),
        "pattern": "{rel_stem}.xml",
        "classes": {"object": 1},
        "instances": True,
    }
    assert d.notes["path"].startswith("2 image(s) outside it have ImageScope XML files of their own (Test)")
    source = ImageSource.model_validate(d.source)
    files = list_source_files(source)
    resolver = build_resolver(source.labels)
    rows = [decode_file(f["path"], f["rel_path"], source, resolver)[0] for f in files]
    objects = [len(np.unique(r["label"])) - 1 for r in rows]
    assert objects == [1, 2, 3, 1, 2, 3] and all(
        np.unique(r["label"] // INSTANCE_STRIDE).tolist() == [0, 1] for r in rows
    )
    # without classes the resolver names them from the files; as semantic, one class map
    semantic = ImageSource.model_validate(
        d.source | {"labels": {k: v for k, v in labels.items() if k not in ("classes", "instances")}}
    )
    assert build_resolver(semantic.labels).labelme_classes == {"object": 1}
    row = decode_file(files[2]["path"], files[2]["rel_path"], semantic, build_resolver(semantic.labels))[0]
    assert row["label"].dtype == np.uint8 and int(row["label"].sum()) == 3 * 9 * 9
    # the test folder alone: outlines beside the tiles
    alone = detect(tmp_path / "Test")
    assert (alone.pairing, alone.n_paired, alone.source["labels"]["path"]) == ("imagescope", 2, str(tmp_path / "Test"))


def test_pascal_voc_xml_beside_images_is_not_imagescope(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.jpg")
        (tmp_path / f"p{i}.xml").write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(PlanError, match=r"4 \.xml"):
        detect(tmp_path)
