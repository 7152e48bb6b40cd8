"""Class lists beside masks (Roboflow's ``_classes.csv``, CamVid's ``class_dict.csv``, CVAT's
``labelmap.txt``, ``classes.txt``) name the planned classes; files made here, no Ray."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segops.config.schema import ImageSource
from segops.data.class_lists import read_class_list
from segops.data.decode import decode_file
from segops.data.pairing import detect


def _photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_roboflow_semantic_export_names_the_mask_values(tmp_path: Path) -> None:
    """Roboflow's "Semantic Segmentation Masks" export: ``<split>/<name>_jpg.rf.<hash>.jpg`` with
    ``..._mask.png`` (class values 0, 1, 2) and a ``_classes.csv`` in every split."""
    for split, n in (("train", 6), ("valid", 2)):
        for i in range(n):
            stem = f"IMG_{i:04d}_jpg.rf.{i:032x}"
            _photo(tmp_path / split / f"{stem}.jpg", i)
            m = np.zeros((24, 32), np.uint8)
            m[2:8, 2:10] = 1
            m[12:20, 14:30] = 2 if i % 2 else 0
            _save(tmp_path / split / f"{stem}_mask.png", m)
        (tmp_path / split / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, scratch\n2, dent\n")
    d = detect(tmp_path)
    assert (d.n_images, d.n_paired, d.classes) == (8, 8, 3)
    assert d.class_names == {1: "scratch", 2: "dent"}
    assert "class names from train/_classes.csv" in d.notes["labels"]


def test_camvid_colour_masks_take_the_lists_background_and_names(tmp_path: Path) -> None:
    """CamVid as Kaggle ships it: ``train/0001TP_000010.png`` with ``train_labels/0001TP_000010_L.png``
    (colour masks, a suffix no other set uses) and ``class_dict.csv``. Road fills the most pixels,
    but the list's ``Void`` (black) is class 0, and the classes carry the list's names. The void
    lies alike on every mask, and the rest is several classes: no "same region" warning."""
    colours = {"Void": (0, 0, 0), "Road": (128, 64, 128), "Car": (64, 0, 128), "Sky": (128, 128, 128)}
    for i in range(6):
        _photo(tmp_path / "train" / f"0001TP_{i:06d}.png", i)
        m = np.zeros((24, 32, 3), np.uint8)
        m[:] = colours["Road"]
        m[:6] = colours["Sky"]
        m[10:14, 4 + i : 12 + i] = colours["Car"]
        m[20:] = colours["Void"]
        _save(tmp_path / "train_labels" / f"0001TP_{i:06d}_L.png", m)
    rows = "".join(f"{name},{r},{g},{b}\n" for name, (r, g, b) in colours.items())
    (tmp_path / "class_dict.csv").write_text("name,r,g,b\n" + rows)
    d = detect(tmp_path)
    labels = d.source["labels"]
    assert (d.n_paired, labels["pattern"]) == (6, "{rel_stem}_L.png")
    assert labels["colors"] == {"#000000": 0, "#804080": 1, "#808080": 2, "#400080": 3}
    assert d.class_names == {1: "Road", 2: "Sky", 3: "Car"}
    assert "names #000000 (Void) background: class 0" in d.notes["labels"]
    assert "path" not in d.notes  # a dense class map is no field of view, however alike its void is
    source = ImageSource.model_validate(d.source)
    [row] = decode_file(str(tmp_path / "train/0001TP_000000.png"), "0001TP_000000.png", source)
    assert row["label"][0, 0] == 2 and row["label"][8, 0] == 1 and row["label"][12, 5] == 3 and row["label"][23, 0] == 0


@pytest.mark.parametrize(
    ("text", "values", "names"),
    [
        ("crack\n", [0, 255], {1: "crack"}),  # no background listed (YOLO's classes.txt): the first is 1
        ("_background_\nscratch\ndent\n", [0, 1, 2], {1: "scratch", 2: "dent"}),  # labelme2voc
    ],
)
def test_a_name_per_line_list_names_the_classes(tmp_path: Path, text: str, values: list[int], names: dict) -> None:
    for i in range(6):
        _photo(tmp_path / "images" / f"{i}.png", i)
        m = np.zeros((24, 32), np.uint8)
        for k, v in enumerate(values[1:]):
            m[2 + 8 * k : 8 + 8 * k, 2:20] = v
        _save(tmp_path / "masks" / f"{i}.png", m)
    (tmp_path / "classes.txt").write_text(text)
    assert detect(tmp_path).class_names == names


def test_cvat_labelmap_and_what_is_no_class_list(tmp_path: Path) -> None:
    path = tmp_path / "labelmap.txt"
    path.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50,83::\nperson:51,221,255::\n")
    listed = read_class_list(path, "labelmap.txt")
    assert listed is not None and listed.names == {0: "background", 1: "car", 2: "person"}
    assert listed.colours == {"#000000": "background", "#fa3253": "car", "#33ddff": "person"}
    notes = tmp_path / "classes.txt"
    notes.write_text("These classes were labelled by two annotators, see the paper: a, b and c.\n")
    assert read_class_list(notes, "classes.txt") is None
    ade = tmp_path / "objectInfo150.csv"
    ade.write_text("Idx,Ratio,Train,Val,Name\n1,0.1576,11664,1172,wall\n2,0.1072,6046,612,building;edifice\n")
    assert read_class_list(ade, "objectInfo150.csv").names == {1: "wall", 2: "building;edifice"}
    table = tmp_path / "classes.csv"
    table.write_text("file,width,height\na.png,10,20\n")
    assert read_class_list(table, "classes.csv") is None
