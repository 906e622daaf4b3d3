"""``iqalab score`` (issue 21, 30): models that read human regions never fall back silently; the pixels a file is
scored on are the pixels training saw; draft decoding only where it stays within its stated tolerance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iqalab.__main__ import main
from iqalab.data.regions import DetectionConfig
from iqalab.inference import CameraMissing, RegionsMissing
from iqalab.models import build_model, get_model_class
from iqalab.stages.score import (
    CAMERA_UNKNOWN,
    REGIONS_DETECTED,
    REGIONS_FALLBACK,
    REGIONS_NONE,
    score_images,
)
from iqalab.train.engine import cpu_native_bf16, save_checkpoint

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


def test_camera_model_is_refused_without_the_fallback_in_one_line(tmp_path, capsys):
    """GCPF reads seven camera parameters that image files do not carry: no silent "unknown" (issue 27)."""
    Image.fromarray(np.full((80, 96, 3), 120, np.uint8)).save(tmp_path / "a.png")
    strict = checkpoint(tmp_path / "strict.pt", "tuningiqa", use_hfe=False, missing_camera="refuse")
    with pytest.raises(CameraMissing, match=r"model 'tuningiqa' reads the seven camera parameters.*"
                                            r"--allow-missing-camera"):
        score_images(strict, [tmp_path / "never-read.png"], progress=False, device="cpu")
    assert main(["-q", "score", "--checkpoint", str(strict), "--out", str(tmp_path / "s.csv"),
                 str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-missing-camera" in err[0]
    assert not (tmp_path / "s.csv").exists()
    allowed = score_images(strict, [tmp_path / "a.png"], progress=False, device="cpu", allow_missing_camera=True)
    assert allowed["camera"].tolist() == [CAMERA_UNKNOWN] and np.isfinite(allowed[ATTRS].to_numpy()).all()
    # trained with missing_camera: unknown (its own option): scored, and the column still says so
    lenient = checkpoint(tmp_path / "lenient.pt", "tuningiqa", use_hfe=False, missing_camera="unknown")
    assert score_images(lenient, [tmp_path / "a.png"], progress=False, device="cpu")["camera"].tolist() == \
        [CAMERA_UNKNOWN]
    # without GCPF the parameters are never read: no refusal, no column
    no_gcpf = checkpoint(tmp_path / "nogcpf.pt", "tuningiqa", use_hfe=False, use_gcpf=False, missing_camera="refuse")
    assert "camera" not in score_images(no_gcpf, [tmp_path / "a.png"], progress=False, device="cpu")


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


# -- the pixels a file is scored on (issue 30) ---------------------------------------------------------------------
def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A large photograph-like image: a real photo enlarged, with sensor-like noise (fine detail everywhere)."""
    import skimage.data

    big = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0.0, 6.0, (height, width, 3))
    return np.clip(np.asarray(big, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def seen_pixels(monkeypatch) -> list[np.ndarray]:
    """The uint8 images the model receives (its ImageNet-normalised input, rounded back)."""
    from iqalab.models.baseline import BackboneMLP
    from iqalab.models.nss import batch_to_uint8

    seen: list[np.ndarray] = []
    real = BackboneMLP.predict

    def predict(self, batch):
        seen.extend(batch_to_uint8(batch["image"]))
        return real(self, batch)

    monkeypatch.setattr(BackboneMLP, "predict", predict)
    return seen


@pytest.mark.parametrize("max_side", [None, 700])
def test_a_large_photo_is_scored_on_exactly_the_cached_training_pixels(tmp_path, monkeypatch, max_side):
    """A 1600 x 1200 JPEG in a dataset's cache at 64 px (a 19x shrink, where the cache's reducing_gap matters) and
    the same file through ``iqalab score``: the model gets the very array training reads, also under a native-store
    cap; a plain bicubic resize (what the Scorer did before sharing the cache's path) would not."""
    from iqalab.data.cache import ImageCache, build_cache
    from iqalab.data.schema import read_dataset
    from iqalab.data.toy import build_toy

    ds = build_toy(tmp_path / "ds", n_scenes=2, per_scene=2, size=72)
    big = ds.image_path(str(ds.images["path"].iloc[0]))
    Image.fromarray(photo_like(1600, 1200)).save(big, format="JPEG", quality=92)
    ds = read_dataset(tmp_path / "ds")
    build_cache(ds, 64, progress=False, max_side=max_side)
    cache = ImageCache(ds, 64)
    assert cache.max_side == max_side
    ckpt = checkpoint(tmp_path / "best.pt", "backbone_mlp", backbone="resnet18", hidden=8)
    if max_side is not None:  # what training records beside cache_size when the native store is capped
        state = torch.load(ckpt, weights_only=False)
        state["config"]["max_side"] = cache.max_side
        save_checkpoint(ckpt, state)
    seen = seen_pixels(monkeypatch)
    score_images(ckpt, [big], progress=False, device="cpu")
    np.testing.assert_array_equal(seen[0], cache[0])
    plain = np.asarray(Image.open(big).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))
    assert (plain != cache[0]).mean() > 0.05


def test_draft_decoding_is_off_by_default_and_within_its_tolerance_where_used(tmp_path, monkeypatch):
    """--draft (off by default) decodes a JPEG at reduced DCT scale only while the decoded image stays at least
    RESIZE_REDUCING_GAP (3) times the model's input: a 2400 x 1800 JPEG scored at 224 px is then within the stated
    tolerance of the training pixels (mean |difference| <= 0.5 grey level, 99th percentile <= 1, max <= 8); a
    1024 x 768 JPEG at 384 px and a PNG are decoded in full and scored on exactly the training pixels."""
    ckpt224 = checkpoint(tmp_path / "a.pt", "backbone_mlp", cache_size=224, backbone="resnet18", hidden=8)
    ckpt384 = checkpoint(tmp_path / "b.pt", "backbone_mlp", cache_size=384, backbone="resnet18", hidden=8)
    large, small, png = tmp_path / "large.jpg", tmp_path / "small.jpg", tmp_path / "large.png"
    Image.fromarray(photo_like(2400, 1800)).save(large, quality=90)
    Image.fromarray(photo_like(1024, 768, seed=1)).save(small, quality=90)
    Image.fromarray(photo_like(1400, 1000, seed=2)).save(png)
    seen = seen_pixels(monkeypatch)
    for ckpt, files in ((ckpt224, [large, png]), (ckpt384, [small])):
        exact = score_images(ckpt, files, progress=False, device="cpu")
        fast = score_images(ckpt, files, progress=False, device="cpu", draft=True)
        assert np.isfinite(fast[ATTRS].to_numpy()).all() and exact["path"].tolist() == fast["path"].tolist()
    exact_large, exact_png, fast_large, fast_png, exact_small, fast_small = seen
    diff = np.abs(exact_large.astype(int) - fast_large.astype(int))
    assert diff.any(), "the 2400 px JPEG is drafted (1/4 scale: 600 x 450 < 672, so 1/2: 1200 x 900)"
    assert diff.mean() <= 0.5 and np.percentile(diff, 99) <= 1 and diff.max() <= 8
    np.testing.assert_array_equal(fast_png, exact_png)
    np.testing.assert_array_equal(fast_small, exact_small)


def test_an_image_the_model_refuses_gets_an_error_row_and_the_others_are_scored(tmp_path):
    """`iqalab score --model niqe` on a folder with images under NIQE's 96 px patch (issue 30): those files keep
    their row with the reason, naming the file, and every other image gets the score it gets when scored alone."""
    rng = np.random.default_rng(0)
    sizes = {"a_ok.png": (128, 160), "b_small.png": (80, 120), "c_ok.png": (112, 100), "d_tiny.png": (3, 2)}
    for name, shape in sizes.items():
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / name)
    files = [tmp_path / name for name in sizes]
    frame = score_images(None, files, model="niqe", progress=False, device="cpu", batch_size=4)
    assert frame["path"].tolist() == [str(f) for f in files]
    errors = dict(zip(frame["path"], frame["error"], strict=True))
    for name in ("b_small.png", "d_tiny.png"):
        assert errors[str(tmp_path / name)].startswith(f"{tmp_path / name}: cannot score")
        assert "at least 96px" in errors[str(tmp_path / name)]
    assert errors[str(tmp_path / "a_ok.png")] == errors[str(tmp_path / "c_ok.png")] == ""
    alone = score_images(None, [files[0], files[2]], model="niqe", progress=False, device="cpu")
    assert "error" not in alone
    ok = frame[frame["error"] == ""]
    np.testing.assert_allclose(ok["niqe"].to_numpy(), alone["niqe"].to_numpy())
    assert frame.loc[frame["error"] != "", "niqe"].isna().all()


def test_scores_equal_the_engines_predictions_on_the_same_images(tmp_path):
    """`iqalab score` on a dataset's files (one a 1200 x 900 JPEG, shrunk 14x) gives the scores the training
    engine predicts for the same images from its cache (``predict_items`` over the evaluation items), within
    1e-5 MOS units (fp32; the two batch the images differently), in file order, with any batch size."""
    from iqalab.data.cache import ImageCache, build_cache
    from iqalab.data.schema import read_dataset
    from iqalab.data.toy import build_toy
    from iqalab.train.engine import eval_items_for, load_checkpoint, model_from_checkpoint, predict_items

    ds = build_toy(tmp_path / "ds", n_scenes=2, per_scene=3, size=72)
    Image.fromarray(photo_like(1200, 900)).save(ds.image_path(str(ds.images["path"].iloc[1])), format="JPEG",
                                                 quality=92)
    ds = read_dataset(tmp_path / "ds")
    build_cache(ds, 64, progress=False)
    ckpt = checkpoint(tmp_path / "best.pt", "backbone_mlp", backbone="resnet18", hidden=8)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    ids = ds.images["image_id"].astype(str).tolist()
    items = eval_items_for(model, ids, None, ds=ds, cache=ImageCache(ds, 64), inputs=model.inputs, cam_stats=None)
    engine = np.asarray(predict_items(model, items, 4, torch.device("cpu"))) * 4.0 + 1.0  # mos_range [1, 5]
    files = [ds.image_path(str(p)) for p in ds.images["path"]]
    for batch_size in (1, 4):
        frame = score_images(ckpt, files, progress=False, device="cpu", batch_size=batch_size)
        assert frame["path"].tolist() == [str(f) for f in files]
        np.testing.assert_allclose(frame[ATTRS].to_numpy(), engine, rtol=0, atol=1e-5)
    assert np.ptp(engine, axis=0).min() > 1e-3, "the images get different scores: the comparison can fail"


def test_amp_is_refused_in_one_line_on_a_cpu_without_native_bf16(photos, tmp_path, monkeypatch, capsys):
    """--amp (off by default) scores under bf16 autocast only where bf16 runs natively (AMX or AVX512_BF16):
    elsewhere it is refused before any file is read; NIQE and friends have no bf16 path."""
    import iqalab.inference

    ckpt = checkpoint(tmp_path / "a.pt", "backbone_mlp", backbone="resnet18", hidden=8)
    monkeypatch.setattr(iqalab.inference, "cpu_native_bf16", lambda: None)
    with pytest.raises(ValueError, match="no native bf16 units"):
        score_images(ckpt, [tmp_path / "never-read.png"], progress=False, device="cpu", amp=True)
    with pytest.raises(ValueError, match="amp applies to a checkpoint"):
        score_images(None, photos, model="niqe", progress=False, device="cpu", amp=True)
    assert main(["-q", "score", "--checkpoint", str(ckpt), "--amp", "--device", "cpu", "--out",
                 str(tmp_path / "s.csv"), *map(str, photos)]) == 2
    assert "no native bf16 units" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()
    monkeypatch.setattr(iqalab.inference, "cpu_native_bf16", lambda: "AMX")  # a classical model: refused anywhere
    with pytest.raises(ValueError, match="brisque reads each image at its native resolution"):
        score_images(checkpoint(tmp_path / "b.pt", "brisque"), [tmp_path / "never-read.png"], progress=False,
                     device="cpu", amp=True)


@pytest.mark.skipif(cpu_native_bf16() is None, reason="--amp on the CPU needs native bf16 (AMX or AVX512_BF16)")
def test_amp_scores_say_so_and_stay_within_their_tolerance_of_fp32(photos, tmp_path):
    """Where the CPU has native bf16, --amp scores the same files in bf16 with channels_last: a ``precision`` column says
    so (the fp32 scores have none) and every score is within 0.05 of the fp32 one on the 1-5 scale."""
    ckpt = checkpoint(tmp_path / "a.pt", "backbone_mlp", backbone="resnet18", hidden=8)
    exact = score_images(ckpt, photos, progress=False, device="cpu")
    fast = score_images(ckpt, photos, progress=False, device="cpu", amp=True)
    assert "precision" not in exact and set(fast["precision"]) == {"bf16 autocast"}
    diff = np.abs(fast[ATTRS].to_numpy() - exact[ATTRS].to_numpy())
    assert diff.max() <= 0.05 and diff.max() > 0, diff


@pytest.mark.parametrize(("model", "option"), [("niqe", "pristine=train"), ("brisque", "regressor=train")])
def test_a_model_that_must_be_trained_is_refused_with_the_checkpoint_command(model, option, photos, tmp_path, capsys):
    """``--model`` scores models usable as published; with an option that asks for training first it is refused in
    one line that names ``--checkpoint`` instead, and nothing is written."""
    out = tmp_path / "s.csv"
    assert main(["-q", "score", "--model", model, "--option", option, "--device", "cpu", "--out", str(out),
                 *map(str, photos)]) == 2
    err = capsys.readouterr().err
    assert f"--model {model}" in err and "must be trained first" in err and "--checkpoint" in err
    assert err.count("\n") == 1 and not out.exists()


def test_an_experiment_folder_is_refused_with_the_checkpoints_it_holds(tuning_ckpt, photos, tmp_path):
    """``--checkpoint build/models/<experiment>`` (a folder of training runs, not an export) is refused, and the
    message names the ``best.pt`` files below it, which can be scored; a folder without any keeps the plain
    message."""
    from iqalab.export import ExportError

    experiment = tmp_path / "tuningiqa_r18"
    (experiment / "scene").mkdir(parents=True)
    (experiment / "scene" / "best.pt").write_bytes(tuning_ckpt.read_bytes())
    with pytest.raises(ExportError, match=r"not an iqalab export.*checkpoints.*tuningiqa_r18/scene/best\.pt"):
        score_images(experiment, photos, tmp_path / "s.csv", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match=r"not an iqalab export \(needs config\.json.*writes one\)$"):
        score_images(empty, photos, tmp_path / "s.csv", progress=False)


def test_scoring_a_gcpf_model_prints_no_torch_jit_deprecation(tmp_path, photos):
    """torch_geometric (TuningIQA's GCPF) calls ``torch.jit.script`` when imported, which torch deprecates with a
    FutureWarning: scoring keeps it out of the user's output. Run in a fresh interpreter (the import happens once
    per process) with FutureWarnings turned into errors."""
    import subprocess
    import sys

    ckpt = checkpoint(tmp_path / "gcpf.pt", "tuningiqa", use_hfe=False, missing_camera="unknown")
    code = ("import sys; from iqalab.stages.score import score_images; "
            "score_images(sys.argv[1], [sys.argv[2]], sys.argv[3], progress=False)")
    run = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code, str(ckpt), str(photos[0]),
                          str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "torch.jit.script" not in run.stderr


# -- the command line's promises (user test of `iqalab score`) -----------------------------------------------
def broken(folder: Path, name: str = "broken.jpg") -> Path:
    """A file with an image suffix that no decoder reads."""
    path = folder / name
    path.write_bytes(b"\xff\xd8\xff not a jpeg")
    return path


def test_a_classical_checkpoint_also_gives_its_published_raw_score(photos, tmp_path):
    """A trained NIQE checkpoint's attribute columns are its fixed monotone map into the MOS range (not fitted
    to MOS); the published raw NIQE (lower is better) comes beside them in ``raw_niqe``, the value
    ``--model niqe`` gives with the same options and the value the engine records as ``raw``. A model without
    a published score (the demo SVR of BRISQUE) adds no such column."""
    niqe = checkpoint(tmp_path / "niqe.pt", "niqe")
    frame = score_images(niqe, photos, progress=False, device="cpu")
    published = score_images(None, photos, model="niqe", options=get_model_class("niqe").smoke_params,
                             progress=False, device="cpu")
    np.testing.assert_allclose(frame["raw_niqe"], published["niqe"])
    mapped = 1.0 + 4.0 / (1.0 + np.exp(-(3.0 - 0.5 * frame["raw_niqe"].to_numpy())))
    np.testing.assert_allclose(frame["overall"], mapped, rtol=1e-6)
    demo_svr = checkpoint(tmp_path / "brisque.pt", "brisque")
    svr = score_images(demo_svr, photos[:1], progress=False, device="cpu")
    assert list(svr.columns) == ["path", *ATTRS]


@pytest.mark.parametrize("name", ["niqe", "backbone_mlp"])
def test_scores_with_and_without_the_raw_score_are_equal(name, photos, tmp_path, monkeypatch):
    """``Scorer.score`` runs the model's ``predict_with_raw`` only when the raw score is asked for (``with_raw``)
    and the model publishes one, its plain ``predict`` otherwise: the attribute scores are the same either way,
    and the raw column comes only with ``with_raw``."""
    from iqalab.inference import Scorer

    kwargs = {"backbone": "resnet18", "hidden": 8} if name == "backbone_mlp" else {}
    scorer = Scorer(checkpoint(tmp_path / "best.pt", name, **kwargs), device="cpu")
    calls: list[str] = []  # what the Scorer called (not what those methods call in turn: NIQE's predict)
    depth = [0]

    def spy(method: str):
        real = getattr(scorer.model, method)

        def called(batch):
            if not depth[0]:
                calls.append(method)
            depth[0] += 1
            try:
                return real(batch)
            finally:
                depth[0] -= 1
        monkeypatch.setattr(scorer.model, method, called)

    spy("predict")
    spy("predict_with_raw")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    plain = scorer.score(images, batch_size=2)
    assert set(calls) == {"predict"}
    calls.clear()
    raw = scorer.score(images, batch_size=2, with_raw=True)
    assert set(calls) == ({"predict_with_raw"} if scorer.raw_column else {"predict"})
    assert set(plain) == set(ATTRS) and set(raw) == set(ATTRS) | ({scorer.raw_column} - {None})
    for a in ATTRS:
        np.testing.assert_array_equal(plain[a], raw[a])
    if name == "niqe":
        assert scorer.raw_column == "raw_niqe" and np.isfinite(raw["raw_niqe"]).all()


@pytest.mark.parametrize(("flags", "message"), [
    (["--checkpoint", "{ckpt}", "--option", "patch_size=64"], "--option applies to --model only"),
    (["--model", "niqe", "--draft"], "--draft applies to --checkpoint only"),
    (["--checkpoint", "{niqe}", "--draft"], "--draft applies to models fed a resized image: niqe reads each image"),
])
def test_options_that_would_be_ignored_are_refused_in_one_line(flags, message, photos, tmp_path, capsys):
    """``--option`` with a checkpoint (its keywords were fixed in training or export) and ``--draft`` with
    ``--model`` (each image is decoded in full at its native resolution) would change nothing, and so would ``--draft``
    with a native-resolution checkpoint (NIQE): refused."""
    ckpt = checkpoint(tmp_path / "a.pt", "backbone_mlp", backbone="resnet18", hidden=8)
    niqe = checkpoint(tmp_path / "niqe.pt", "niqe")  # a native-resolution model: nothing to draft
    out = tmp_path / "s.csv"
    argv = [f.format(ckpt=ckpt, niqe=niqe) for f in flags]
    assert main(["-q", "score", *argv, "--device", "cpu", "--out", str(out), *map(str, photos)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_an_existing_output_is_kept_when_nothing_could_be_scored(photos, tmp_path, capsys):
    """Every file fails: exit status 2, the reasons on stderr, and the previous ``--out`` is kept as is."""
    out = tmp_path / "scores.csv"
    out.write_text("path,niqe\nold.png,3.2\n")
    bad = [broken(tmp_path, "a.jpg"), broken(tmp_path, "b.jpg")]
    assert main(["-q", "score", "--model", "niqe", "--device", "cpu", "--out", str(out), *map(str, bad)]) == 2
    err = capsys.readouterr().err
    assert "a.jpg" in err and "b.jpg" in err and "no image could be scored" in err and err.count("\n") == 1
    assert out.read_text() == "path,niqe\nold.png,3.2\n"


@pytest.mark.parametrize("where", ["folder", "parent_is_file", "unwritable"])
def test_a_bad_out_path_is_refused_before_anything_is_scored(where, photos, tmp_path, monkeypatch, capsys):
    """A ``--out`` that cannot be written is found before the model is built or any file read, in one line
    naming it."""
    import iqalab.stages.score as score_stage

    def never(*args, **kwargs):
        raise AssertionError("the model was built before --out was checked")

    monkeypatch.setattr(score_stage, "_scorer", never)
    (tmp_path / "a_file").write_text("x")
    out = {"folder": tmp_path, "parent_is_file": tmp_path / "a_file" / "s.csv",
           "unwritable": tmp_path / "ro" / "s.csv"}[where]
    if where == "unwritable":  # root may write anywhere: ask os.access as an unprivileged user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real(p, mode, **kw))
    assert main(["-q", "score", "--model", "niqe", "--out", str(out), *map(str, photos)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {out}" in err
    assert {"folder": "is a folder", "parent_is_file": f"{tmp_path / 'a_file'} is a file",
            "unwritable": "not writable"}[where] in err


def test_a_file_that_is_no_checkpoint_is_named_in_one_line(photos, tmp_path, capsys):
    """A PNG (any non-torch file) given as --checkpoint: said plainly, not as torch's unpickling complaint."""
    assert main(["-q", "score", "--checkpoint", str(photos[0]), "--out", str(tmp_path / "s.csv"),
                 str(photos[1])]) == 2
    err = capsys.readouterr().err
    assert f"{photos[0]}: not a torch checkpoint or iqalab export" in err and err.count("\n") == 1
    assert "Unsupported operand" not in err


def test_help_says_what_score_and_export_accept_and_write(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "iqalab export" in text and "printed to stdout" in text and "scores.csv" in text
    assert "replaced if present" in text and "lower is better" in text
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "experiment of params.yaml" in text and "--split" in text


def test_a_failed_file_is_reported_once_on_stderr_and_in_the_csv(photos, tmp_path, capsys, caplog):
    """One ``not scored:`` line on stderr and the CSV's error column; neither a log line per file nor the
    reason again in the table printed to stdout."""
    import logging

    caplog.set_level(logging.INFO, logger="iqalab")
    bad = broken(tmp_path)
    out = tmp_path / "s.csv"
    argv = ["score", "--model", "niqe", "--device", "cpu", "--out", str(out), str(photos[0]), str(bad)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("not scored:") == 1 and "broken.jpg: cannot decode" in captured.err
    assert "cannot decode" not in captured.out and "broken.jpg" in captured.out
    assert not [r for r in caplog.records if "broken.jpg" in r.getMessage()]
    assert "cannot decode" in pd.read_csv(out)["error"].iloc[1]


def test_a_file_named_twice_is_scored_once_in_the_order_first_given(photos, tmp_path, caplog):
    """A folder and a file inside it, or one file under two spellings, give one CSV row per image (the first
    occurrence, in the order given), and the log says how many repeats were left out."""
    import logging

    folder = photos[0].parent
    again = folder / ".." / folder.name / photos[1].name  # the same file, another spelling
    with caplog.at_level(logging.INFO, logger="iqalab.io"):
        frame = score_images(None, [photos[1], folder, again], model="niqe", progress=False, device="cpu")
    assert frame["path"].tolist() == [str(photos[1]), str(photos[0])]
    assert "2 repeated file(s) kept once" in caplog.text
    alone = score_images(None, photos, model="niqe", progress=False, device="cpu")
    assert sorted(frame["niqe"]) == pytest.approx(sorted(alone["niqe"]))


def test_decoding_ahead_holds_at_most_the_budget_of_live_pixels_and_keeps_the_order():
    """`decode_ahead` (issue 30): the images alive at any time, decoded ahead or out with the consumer, never take
    more than the budget; no image of a batch the consumer has finished with is alive when the next files are
    submitted; an image larger than the budget is decoded when nothing else is alive and comes alone; every file
    comes once, in order, with a decode error in its image's place. Without the bound (the queue of two batches
    that score kept before) the same files hold far more, so the check can fail."""
    import threading
    import time
    import weakref
    from concurrent.futures import ThreadPoolExecutor

    from iqalab.data.schema import DataError
    from iqalab.stages.score import decode_ahead

    sizes = [300, 200, 300, 900, 100, 1500, 300, 300, 200, 400, 300, 100, 250, 350]
    files = [Path(f"f{k:02d}.png") for k in range(len(sizes))]
    nbytes = {f: n for f, n in zip(files, sizes, strict=True)}
    bad = files[4]

    def peak_alive(budget: int, batch_size: int) -> tuple[int, list[list[int]]]:
        lock = threading.Lock()
        alive, peak = [0], [0]
        alive_at: set[int] = set()  # positions whose image is alive
        released: set[int] = set()  # positions of the batches the consumer has finished with

        def gone(n: int, position: int) -> None:
            with lock:
                alive[0] -= n
                alive_at.discard(position)

        def size_of(path: Path) -> int:  # called as each file is submitted
            with lock:
                assert not alive_at & released, f"{sorted(alive_at & released)} alive after their batch"
            return nbytes[path]

        def load(path: Path) -> np.ndarray:
            time.sleep(0.002)
            if path == bad:
                raise DataError(f"{path}: cannot decode image")
            image = np.zeros(nbytes[path], dtype=np.uint8)
            with lock:
                alive[0] += image.nbytes
                alive_at.add(files.index(path))
                if image.nbytes > budget:  # only ever alone
                    assert alive[0] == image.nbytes
                else:
                    peak[0] = max(peak[0], alive[0])
            weakref.finalize(image, gone, image.nbytes, files.index(path))
            return image

        batches = []
        with ThreadPoolExecutor(max_workers=3) as pool:
            for batch in decode_ahead(files, load, size_of, pool, batch_size, budget):
                assert 1 <= len(batch) <= batch_size
                batches.append([position for position, _ in batch])
                for position, image in batch:
                    if files[position] == bad:
                        assert isinstance(image, DataError) and str(bad) in str(image)
                    else:
                        assert image.nbytes == sizes[position]
                del image  # the consumer keeps no pixels once it asks for the next batch
                time.sleep(0.01)  # "scoring": the files submitted meanwhile finish decoding
                released.update(batches[-1])
        return peak[0], batches

    for budget in (1000, 600):
        peak, batches = peak_alive(budget, batch_size=3)
        assert [p for b in batches for p in b] == list(range(len(files)))
        assert 0 < peak <= budget
        assert [3] in batches and [5] in batches if budget == 600 else [5] in batches  # oversized: alone
    unbounded, batches = peak_alive(10**9, batch_size=3)
    assert unbounded > 2000 and all(len(b) == 3 for b in batches[:-1])


def test_a_memory_bound_changes_no_score_and_is_set_by_argument_or_environment(photos, tmp_path, monkeypatch):
    """`score_images(prefetch_mb=...)` and `IQALAB_PREFETCH_MB`: a bound that admits one image at a time gives the
    scores of the default (NIQE at native resolution, a checkpoint at its cache size); anything but a positive
    number is refused in one line naming its source, before anything is written."""
    from iqalab.stages.score import PREFETCH_MB, prefetch_budget

    files = photos * 3
    default = score_images(None, files, model="niqe", progress=False, device="cpu", batch_size=4)
    tight = score_images(None, files, model="niqe", progress=False, device="cpu", batch_size=4, prefetch_mb=0.1)
    pd.testing.assert_frame_equal(tight, default)
    ckpt = checkpoint(tmp_path / "best.pt", "backbone_mlp")
    monkeypatch.setenv("IQALAB_PREFETCH_MB", "0.01")
    assert prefetch_budget() == int(0.01 * 2**20)
    tight = score_images(ckpt, photos, progress=False, device="cpu")
    monkeypatch.delenv("IQALAB_PREFETCH_MB")
    assert prefetch_budget() == int(PREFETCH_MB * 2**20)
    pd.testing.assert_frame_equal(tight, score_images(ckpt, photos, progress=False, device="cpu"))
    out = tmp_path / "scores.csv"
    for value, message in (("lots", "IQALAB_PREFETCH_MB='lots' is not a number"),
                           ("-5", "IQALAB_PREFETCH_MB=-5.0: the decode-ahead bound must be a positive number"),
                           ("inf", "IQALAB_PREFETCH_MB=inf: the decode-ahead bound")):
        monkeypatch.setenv("IQALAB_PREFETCH_MB", value)
        with pytest.raises(ValueError, match=message):
            score_images(None, photos, out, model="niqe", progress=False, device="cpu")
    assert not out.exists()
    monkeypatch.delenv("IQALAB_PREFETCH_MB")
    with pytest.raises(ValueError, match="prefetch_mb=0.0: the decode-ahead bound"):
        score_images(None, photos, model="niqe", progress=False, device="cpu", prefetch_mb=0)



def test_the_command_line_sets_the_memory_bound(photos, tmp_path, monkeypatch, capsys):
    """`iqalab score --prefetch-mb MIB` reaches `score_images(prefetch_mb=...)` (over the environment variable)
    and a value that is not a positive number of MiB is an argument error naming the flag."""
    import iqalab.stages.score as score_stage

    seen = []
    real = score_stage.prefetch_budget
    monkeypatch.setattr(score_stage, "prefetch_budget", lambda mb=None: seen.append(mb) or real(mb))
    monkeypatch.setenv("IQALAB_PREFETCH_MB", "1000")
    out = tmp_path / "s.csv"
    assert main(["-q", "score", "--model", "niqe", "--device", "cpu", "--prefetch-mb", "0.5", "--out", str(out),
                 str(photos[0])]) == 0
    assert seen == [0.5] and len(pd.read_csv(out)) == 1
    capsys.readouterr()
    for value in ("0", "-1", "inf", "lots"):
        with pytest.raises(SystemExit) as exc:
            main(["score", "--model", "niqe", "--prefetch-mb", value, str(photos[0])])
        assert exc.value.code == 2
        assert "argument --prefetch-mb:" in capsys.readouterr().err
    assert seen == [0.5]

def test_the_bound_counts_each_file_at_the_size_the_scorer_decodes_it(photos, tmp_path):
    """`decoded_nbytes`: a native-resolution model counts the file's own pixels from its header (capped to a
    checkpoint's `max_side`), a checkpoint fed resized images its square cache size, an unreadable file 0."""
    from iqalab.inference import ModelScorer, Scorer
    from iqalab.stages.score import decoded_nbytes

    width, height = Image.open(photos[0]).size
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    native = decoded_nbytes(ModelScorer("niqe", device="cpu"))
    assert native(photos[0]) == 3 * width * height and native(broken) == 0
    resized = decoded_nbytes(Scorer(checkpoint(tmp_path / "best.pt", "backbone_mlp", cache_size=48), "cpu"))
    assert resized(photos[0]) == 3 * 48 * 48
    capped = Scorer(checkpoint(tmp_path / "niqe.pt", "niqe"), "cpu")
    capped.max_side = 256
    scale = 256 / max(width, height)
    assert decoded_nbytes(capped)(photos[0]) == 3 * round(width * scale) * round(height * scale)


def test_an_option_reaches_the_model_and_a_previous_csv_is_replaced(photos, tmp_path, capsys):
    """`--option KEY=VALUE` passes a YAML-typed keyword to the model (NIQE's `patch_size=64` scores as
    `score_images(options={"patch_size": 64})` does, not as the default 96 px patches); an option without `=` is
    refused in one line; a successful run replaces an existing `--out` file."""
    out = tmp_path / "scores.csv"
    out.write_text("stale,content\n1,2\n")
    assert main(["-q", "score", "--model", "niqe", "--option", "patch_size=64", "--device", "cpu", "--out", str(out),
                 *map(str, photos)]) in (0, None)
    written = pd.read_csv(out)
    assert list(written.columns) == ["path", "niqe"] and written["path"].tolist() == [str(p) for p in photos]
    small = score_images(None, photos, model="niqe", options={"patch_size": 64}, progress=False, device="cpu")
    default = score_images(None, photos, model="niqe", progress=False, device="cpu")
    np.testing.assert_allclose(written["niqe"], small["niqe"], atol=1e-4)  # the CSV keeps 4 decimals
    assert np.abs(written["niqe"] - default["niqe"]).max() > 0.01
    with pytest.raises(SystemExit, match="--option 'patch_size' is not KEY=VALUE"):
        main(["-q", "score", "--model", "niqe", "--option", "patch_size", "--out", str(out), str(photos[0])])
    assert pd.read_csv(out)["path"].tolist() == [str(p) for p in photos]  # the refused run wrote nothing
