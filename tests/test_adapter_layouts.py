"""Every published layout each adapter accepts, one test per layout (issue #25).

The fixtures come from ``tests/test_adapters.py`` (each benchmark's files as released); here they are rearranged
into the other layouts publishers actually ship: KonIQ's 512x384 release, PIQ23's image download (score files at
the top level, the split copied in from the repository), the single top folder an unzip leaves, BID's images
beside the workbook, CGFIQA's single label file. Each test checks that the adapter reads the same scores and
records which layout it found (``dataset.json``: ``raw_layout``, ``raw_layout_root``), and ``iqalab data status``
(:func:`iqalab.data.fetch.check_raw`) agrees.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iqalab.data.adapters import LAYOUTS, adapt
from iqalab.data.adapters.base import match_layout
from iqalab.data.fetch import check_raw, layout_top_names
from iqalab.data.schema import DataError, read_dataset
from tests.test_adapters import (
    FAST,
    make_bid,
    make_cgfiqa,
    make_clive,
    make_generic,
    make_gfiqa,
    make_koniq,
    make_piq23,
    make_spaq,
    write_image,
)


def _wrap(raw: Path, name: str) -> Path:
    """Move everything in ``raw`` into ``raw/<name>/`` (what unzipping an archive with a top folder leaves)."""
    inner = raw / name
    inner.mkdir()
    for entry in list(raw.iterdir()):
        if entry != inner:
            shutil.move(str(entry), inner / entry.name)
    (raw / "__MACOSX").mkdir()  # the resource-fork folder macOS zips carry is ignored
    return inner


# --------------------------------------------------------------------------------------------- KonIQ-10k
def test_koniq_512x384_release_is_found_without_options(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    table = make_koniq(raw)
    (raw / "1024x768").rename(raw / "512x384")
    ds = read_dataset(adapt("koniq10k", raw, tmp_path / "out", n_splits=1, **FAST).root, check_files=True)
    assert ds.meta["resolution"] == "512x384" and ds.meta["raw_layout"] == "512x384 release"
    assert ds.images["path"].str.startswith("images/512x384/").all()
    np.testing.assert_allclose(ds.images["mos_overall"], table["MOS"])
    assert check_raw("koniq10k", "koniq10k", raw).layout == "512x384 release"


def test_koniq_prefers_1024x768_and_honours_an_explicit_resolution(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_koniq(raw)
    for name in (raw / "1024x768").iterdir():
        write_image(raw / "512x384" / name.name, 0, size=(16, 12))
    auto = adapt("koniq10k", raw, tmp_path / "a", n_splits=1, **FAST)
    assert auto.meta["resolution"] == "1024x768" and (auto.images["width"] == 32).all()
    small = adapt("koniq10k", raw, tmp_path / "b", n_splits=1, resolution="512x384", **FAST)
    assert small.meta["resolution"] == "512x384" and (small.images["width"] == 16).all()
    shutil.rmtree(raw / "512x384")
    with pytest.raises(DataError, match=r"missing 512x384"):
        adapt("koniq10k", raw, tmp_path / "c", resolution="512x384", **FAST)
    with pytest.raises(DataError, match=r"resolution='640x480'"):
        adapt("koniq10k", raw, tmp_path / "d", resolution="640x480", **FAST)


def test_koniq_inside_the_folder_an_unzip_left(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    table = make_koniq(raw)
    _wrap(raw, "koniq10k")
    ds = read_dataset(adapt("koniq10k", raw, tmp_path / "out", n_splits=1, **FAST).root, check_files=True)
    assert ds.meta["raw_layout_root"] == "koniq10k"
    np.testing.assert_allclose(ds.images["mos_overall"], table["MOS"])
    assert ds.images["path"].str.startswith("images/1024x768/").all()  # relative to the found root
    status = check_raw("koniq10k", "koniq10k", raw)
    assert status.state == "present" and status.layout == "1024x768 release"


# --------------------------------------------------------------------------------------------- PIQ23
def _piq23_download(raw: Path) -> dict[str, pd.DataFrame]:
    """The image download's layout: Scores_*.csv at the top level, the repository's split files copied in."""
    tables = make_piq23(raw)
    for f in (raw / "Scores").iterdir():
        f.rename(raw / f.name)
    (raw / "Scores").rmdir()
    return tables


def test_piq23_github_repository_layout(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_piq23(raw)
    ds = adapt("piq23", raw, tmp_path / "out", **FAST)
    assert ds.meta["raw_layout"].startswith("GitHub repository")
    assert "Scores/Scores_Overall.csv" in ds.meta["raw_files"]


@pytest.mark.parametrize("split_at_top", [False, True])
def test_piq23_image_download_layout(tmp_path: Path, split_at_top: bool) -> None:
    raw = tmp_path / "raw"
    tables = _piq23_download(raw)
    if split_at_top:  # only the scene split copied, beside the score files
        (raw / "Test split/Scene Split.csv").rename(raw / "Scene Split.csv")
        shutil.rmtree(raw / "Test split")
    ds = read_dataset(adapt("piq23", raw, tmp_path / "out", **FAST).root, check_files=True)
    assert ds.meta["raw_layout"].startswith("image download")
    assert set(ds.meta["raw_files"]) >= {"Scores_Overall.csv", "Scores_Details.csv", "Scores_Exposure.csv"}
    by_id = ds.images.set_index("image_id")
    for attr, table in tables.items():
        np.testing.assert_allclose(by_id.loc[table["IMAGE"], f"mos_{attr.lower()}"], table["JOD"])
    assert ("device" in set(ds.splits["split"])) is not split_at_top


def test_piq23_image_download_without_the_split_says_where_it_comes_from(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _piq23_download(raw)
    shutil.rmtree(raw / "Test split")
    with pytest.raises(DataError) as err:
        adapt("piq23", raw, tmp_path / "out", **FAST)
    text = str(err.value)
    assert "Scene Split.csv" in text and "GitHub repository" in text and "image download" in text
    assert not (tmp_path / "out").exists()
    assert check_raw("piq23", "piq23", raw).state == "partial"


def test_piq23_download_inside_a_top_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _piq23_download(raw)
    _wrap(raw, "PIQ23")
    ds = adapt("piq23", raw, tmp_path / "out", **FAST)
    assert ds.meta["raw_layout_root"] == "PIQ23" and ds.meta["raw_layout"].startswith("image download")


# --------------------------------------------------------------------------------------------- the others
def test_clive_challengedb_release_folder(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    names, mos = make_clive(raw)
    _wrap(raw, "ChallengeDB_release")
    ds = adapt("clive", raw, tmp_path / "out", n_splits=1, **FAST)
    assert ds.images["image_id"].tolist() == names[7:] and ds.meta["raw_layout_root"] == "ChallengeDB_release"
    np.testing.assert_allclose(ds.images["mos_overall"], mos[7:])


def test_bid_images_beside_the_workbook(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_bid(raw)
    for f in list((raw / "ImageDatabase").iterdir()):
        f.rename(raw / f.name)
    (raw / "ImageDatabase").rmdir()
    ds = adapt("bid", raw, tmp_path / "out", n_splits=1, **FAST)
    assert ds.images["path"].tolist() == [f"images/DatabaseImage{i:04d}.JPG" for i in range(1, 6)]
    assert check_raw("bid", "bid", raw).state == "present"


def test_spaq_nested_and_without_exif(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    scores, _ = make_spaq(raw)
    (raw / "Annotations/EXIF_tags.xlsx").unlink()
    _wrap(raw, "SPAQ zip")
    with pytest.raises(DataError, match="EXIF_tags.xlsx"):
        adapt("spaq", raw, tmp_path / "out", n_splits=1, **FAST)
    ds = adapt("spaq", raw, tmp_path / "out", n_splits=1, exif=False, **FAST)
    np.testing.assert_allclose(ds.images["mos_overall"], scores["MOS"])
    assert ds.meta["raw_layout_root"] == "SPAQ zip"


def test_gfiqa_nested(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    table = make_gfiqa(raw)
    _wrap(raw, "GFIQA-20K")
    ds = adapt("gfiqa", raw, tmp_path / "out", n_splits=1, **FAST)
    np.testing.assert_allclose(ds.images["mos_overall"], table["mos"])


def test_cgfiqa_single_label_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    labels = make_cgfiqa(raw)
    for part in labels:
        (raw / part / "label.json").unlink()
    (raw / "label.json").write_text(json.dumps(labels))
    ds = adapt("cgfiqa", raw, tmp_path / "out", **FAST)
    assert ds.meta["raw_layout"] == "one label.json with train/val/test" and len(ds.images) == 9
    (raw / "label.json").write_text(json.dumps({"train": labels["train"]}))
    with pytest.raises(DataError, match=r"label\.json: expected the parts"):
        adapt("cgfiqa", raw, tmp_path / "out2", **FAST)


def test_generic_nested(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_generic(raw)
    _wrap(raw, "fglive_export")
    ds = adapt("generic", raw, tmp_path / "out", mos_range=[1, 5], **FAST)
    assert len(ds.images) == 12 and len(ds.pairs) == 2 and ds.name == "raw"


def test_a_folder_with_two_candidates_is_not_guessed(tmp_path: Path) -> None:
    """Two folders side by side are not an unzip wrapper: the adapter says what is missing at the top."""
    raw = tmp_path / "raw"
    make_gfiqa(raw / "a")
    make_gfiqa(raw / "b")
    with pytest.raises(DataError, match=r"missing mos_val_rating\.csv"):
        adapt("gfiqa", raw, tmp_path / "out", **FAST)
    assert match_layout(raw, LAYOUTS["gfiqa"]) is None


def test_every_adapter_declares_its_layouts_and_fetch_reads_them() -> None:
    for name, layouts in LAYOUTS.items():
        assert layouts and all(layout.files for layout in layouts), name
    assert {"Scores", "Test split", "Scores_Overall.csv", "Overall"} <= layout_top_names("piq23")
    assert {"1024x768", "512x384", "koniq10k_scores_and_distributions.csv"} <= layout_top_names("koniq10k")
