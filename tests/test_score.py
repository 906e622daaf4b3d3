"""``iqalab score`` (issue 21, 30): models that read human regions never fall back silently; the pixels a file is
scored on are the pixels training saw; draft decoding only where it stays within its stated tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalab.__main__ import main
from iqalab.data.regions import DetectionConfig
from iqalab.models import build_model, get_model_class
from iqalab.stages.score import REGIONS_DETECTED, REGIONS_FALLBACK, REGIONS_NONE, RegionsMissing, score_images
from iqalab.train.engine import save_checkpoint

ATTRS = ["overall", "sharpness"]


def checkpoint(path: Path, name: str, cache_size: int = 64, **kwargs) -> Path:
    """A freshly built model of the registry saved as a training checkpoint (untrained weights)."""
    kwargs = {**get_model_class(name).smoke_params, **kwargs}
    model = build_model(name, ATTRS, **kwargs)
    save_checkpoint(path, {"model": model.state_dict(), "config": {
        "model_name": name, "model_kwargs": kwargs, "attributes": ATTRS, "mos_range": [1.0, 5.0],
        "cache_size": cache_size, "eval_crop": None}})
    return path


@pytest.fixture(scope="module")
def tuning_ckpt(tmp_path_factory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", "tuningiqa")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    out = []
    for name in ("astronaut", "coffee"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        out.append(path)
    return out


def test_region_model_is_refused_without_detection_in_one_line(tuning_ckpt, tmp_path, capsys):
    with pytest.raises(RegionsMissing, match=r"model 'tuningiqa' reads person_box.*--detect-regions.*"
                                             r"--allow-missing-regions"):
        score_images(tuning_ckpt, [tmp_path / "never-read.png"], progress=False)  # refused before any file
    assert main(["-q", "score", "--checkpoint", str(tuning_ckpt), "--out", str(tmp_path / "s.csv"),
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'tuningiqa'" in err[0] and "--detect-regions" in err[0]
    assert not (tmp_path / "s.csv").exists()
    # a model without regions is scored as before, with no regions column
    plain = checkpoint(tmp_path / "plain.pt", "tuningiqa", use_hfe=False)
    Image.fromarray(np.full((80, 96, 3), 120, np.uint8)).save(tmp_path / "a.png")
    frame = score_images(plain, [tmp_path / "a.png"], progress=False, device="cpu")
    assert "regions" not in frame and np.isfinite(frame[ATTRS].to_numpy()).all()


def recorded_boxes(monkeypatch) -> list[torch.Tensor]:
    from iqalab.models.tuningiqa import TuningIQA

    seen: list[torch.Tensor] = []
    real = TuningIQA.predict

    def predict(self, batch):
        seen.append(batch["person_box"].clone())
        return real(self, batch)

    monkeypatch.setattr(TuningIQA, "predict", predict)
    return seen


def test_allow_missing_regions_keeps_the_fallback_and_says_so(tuning_ckpt, photos, monkeypatch):
    seen = recorded_boxes(monkeypatch)
    frame = score_images(tuning_ckpt, photos, progress=False, device="cpu", allow_missing_regions=True)
    assert frame["regions"].tolist() == [REGIONS_FALLBACK] * len(photos)
    assert torch.isnan(torch.cat(seen)).all(), "no box: the model's documented fallback"


def test_detected_regions_reach_the_model_with_the_ingest_settings(tuning_ckpt, photos, monkeypatch):
    """--detect-regions runs the ingest detector on each file with the ingest settings; a found box reaches the
    model in the pixel frame of its input, an image without a detection is labelled as scored by the fallback."""
    from iqalab.data import detect

    calls = []
    box = {"person_x0": 0.25, "person_y0": 0.5, "person_x1": 0.75, "person_y1": 1.0}

    def fake_detect(path, **kwargs):
        calls.append((Path(path).name, kwargs))
        row = {c: float("nan") for c in (*detect.COLUMNS, *detect.SCORES)}
        return row | box if Path(path).name == "astronaut.png" else row

    monkeypatch.setattr(detect, "detect_one", fake_detect)
    seen = recorded_boxes(monkeypatch)
    cfg = DetectionConfig(face_threshold=0.8, max_side=512)
    frame = score_images(tuning_ckpt, photos, progress=False, device="cpu", detect_regions=True, detection=cfg)
    assert frame["regions"].tolist() == [REGIONS_DETECTED, REGIONS_NONE]
    assert [c[0] for c in calls] == ["astronaut.png", "coffee.png"]
    assert calls[0][1] == {"person": "face_rule", "face_threshold": 0.8, "person_threshold": 0.5,
                           "min_face_size": 20, "arch": cfg.fasterrcnn_arch, "weights": None, "max_side": 512}
    boxes = torch.cat(seen)
    torch.testing.assert_close(boxes[0], torch.tensor([16.0, 32.0, 48.0, 64.0]))  # 64 px input frame
    assert torch.isnan(boxes[1]).all()
