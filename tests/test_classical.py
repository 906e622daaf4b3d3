"""NIQE and BRISQUE (src/iqalab/models/nss.py, niqe.py, brisque.py): MSCN, GGD/AGGD fits against sampled data,
MATLAB-compatible resizing, vectorisation against per-item computation, monotonicity on a real photo, model files
and wrappers, calibration against the original MATLAB releases' outputs, and the engine's one batch contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from scipy.special import gamma as gamma_fn

from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from iqalab.models import build_model
from iqalab.models.brisque import BRISQUE, brisque_features
from iqalab.models.niqe import (
    NIQE,
    OFFICIAL_PRISTINE,
    ImageTooSmallError,
    NiqeModel,
    _blocks,
    _fit_decreasing_logistic,
    _niqe_block_features,
    fit_niqe,
    niqe,
    niqe_distance,
    niqe_patch_features,
    undefined_in_original,
)
from iqalab.models.nss import (
    AGGD_RATIO,
    GGD_RATIO,
    SHAPE_GRID,
    _aggd_moments,
    _nearest_index,
    batch_to_gray,
    fit_aggd,
    fit_ggd,
    gaussian_window,
    imresize,
    mscn,
    to_gray,
)

skimage_data = pytest.importorskip("skimage.data")

#: the official NIQE pristine model, shipped in the package (src/iqalab/models/data/README.md)
OFFICIAL_NIQE = OFFICIAL_PRISTINE


def blur(gray: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(gray, sigma)) if sigma > 0 else gray


def noisy(gray: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, gray.shape)
    return np.clip(np.round(gray + noise), 0, 255)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    """The cameraman photo, grey 0-255 float, cropped to 384x384 (16 NIQE patches)."""
    return skimage_data.camera()[64:448, 64:448].astype(np.float64)


@pytest.fixture(scope="module")
def pristine_other_photos() -> NiqeModel:
    """A pristine model from photos other than the test photo (all 76 patches: four photos have too few sharp
    ones for a 36-dimensional covariance)."""
    photos = [skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket(), skimage_data.astronaut()]
    return fit_niqe(photos, sharpness_threshold=0.0)


# -- MSCN ------------------------------------------------------------------------------------------------------
def test_mscn_of_constant_image_is_zero():
    flat = np.full((40, 52), 117.0)
    coef, local_std = mscn(flat, mode="nearest")
    assert np.abs(coef).max() < 1e-9 and np.abs(local_std).max() < 1e-4  # sqrt of a cancelling difference
    # zero padding (BRISQUE's filter2 'same') is exact only away from the 3-pixel border
    coef0, _ = mscn(flat, mode="constant")
    assert np.abs(coef0[3:-3, 3:-3]).max() < 1e-9
    assert np.abs(coef0[0]).min() > 0.1


@pytest.mark.parametrize("mode", ["nearest", "constant"])
def test_mscn_matches_direct_2d_filtering(mode):
    img = np.random.default_rng(1).uniform(0, 255, (33, 41))
    win = gaussian_window()
    mu = ndimage.correlate(img, win, mode=mode)
    sd = np.sqrt(np.abs(ndimage.correlate(img**2, win, mode=mode) - mu**2))
    coef, local_std = mscn(img, mode=mode)
    np.testing.assert_allclose(local_std, sd, atol=1e-8)
    np.testing.assert_allclose(coef, (img - mu) / (sd + 1.0), atol=1e-10)


def test_gaussian_window_is_fspecial():
    win = gaussian_window(7, 7 / 6)
    assert win.shape == (7, 7) and win.sum() == pytest.approx(1.0)
    # fspecial: exp(-(x^2 + y^2) / (2 sigma^2)) normalised
    assert win[3, 3] / win[3, 4] == pytest.approx(np.exp(1 / (2 * (7 / 6) ** 2)))
    assert win[3, 3] / win[4, 4] == pytest.approx(np.exp(2 / (2 * (7 / 6) ** 2)))


# -- GGD / AGGD fits -------------------------------------------------------------------------------------------
def test_nearest_index_is_the_table_argmin():
    rng = np.random.default_rng(2)
    for table in (AGGD_RATIO, GGD_RATIO[::-1]):
        assert np.all(np.diff(table) > 0), "moment-ratio table must be strictly monotone"
        values = rng.uniform(table[0] - 0.01, table[-1] + 0.01, 400)
        brute = np.argmin(np.abs(table[None, :] - values[:, None]), axis=1)
        np.testing.assert_array_equal(_nearest_index(table, values), brute)
    assert _nearest_index(AGGD_RATIO, np.array([np.nan]))[0] == -1


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.5])
def test_ggd_fit_recovers_gennorm_shape(shape):
    x = stats.gennorm.rvs(shape, scale=2.0, size=200_000, random_state=np.random.default_rng(3))
    alpha, sigma = fit_ggd(x)
    assert alpha == pytest.approx(shape, rel=0.05)
    # sigma^2 of a GGD with scale s is s^2 Gamma(3/b) / Gamma(1/b)
    assert sigma == pytest.approx(2.0 * np.sqrt(gamma_fn(3 / shape) / gamma_fn(1 / shape)), rel=0.02)


def test_ggd_fit_is_vectorised_over_rows():
    rng = np.random.default_rng(4)
    rows = np.stack([stats.gennorm.rvs(b, size=50_000, random_state=rng) for b in (0.8, 2.0)])
    alpha, _ = fit_ggd(rows, axis=1)
    assert alpha.shape == (2,)
    assert alpha[0] == pytest.approx(0.8, rel=0.06) and alpha[1] == pytest.approx(2.0, rel=0.06)
    np.testing.assert_array_equal(alpha, [fit_ggd(r)[0] for r in rows])


@pytest.mark.parametrize(("shape", "beta_l", "beta_r"), [(1.2, 0.5, 1.5), (2.5, 1.0, 0.4)])
def test_aggd_fit_recovers_asymmetric_parameters(shape, beta_l, beta_r):
    rng = np.random.default_rng(5)
    n = 300_000
    magnitude = np.abs(stats.gennorm.rvs(shape, size=n, random_state=rng))
    # mass on each side is proportional to its scale
    left = rng.random(n) < beta_l / (beta_l + beta_r)
    x = np.where(left, -beta_l * magnitude, beta_r * magnitude)
    alpha, bl, br = fit_aggd(x)
    assert alpha == pytest.approx(shape, rel=0.05)
    assert bl == pytest.approx(beta_l, rel=0.03) and br == pytest.approx(beta_r, rel=0.03)
    assert (br > bl) == (beta_r > beta_l)


def test_aggd_of_one_sided_data_follows_matlab():
    """No negative sample: MATLAB's mean([]) is NaN and its shape search over NaN returns the first grid shape
    (0.2); NIQE keeps the NaN (nancov drops the patch), BRISQUE's mode gives the empty side deviation 0."""
    x = np.abs(np.random.default_rng(6).normal(size=1000))
    alpha, bl, br = fit_aggd(x)
    assert alpha == pytest.approx(0.2) and np.isnan(bl) and np.isfinite(br)
    alpha, left, right = _aggd_moments(x, empty_side="zero")
    assert alpha == pytest.approx(0.2) and left == 0.0 and right == pytest.approx(np.sqrt(np.mean(x * x)))


def test_ggd_of_all_zero_data_gets_matlab_first_shape():
    shape, sigma = fit_ggd(np.zeros(50))
    assert shape == pytest.approx(0.2) and sigma == 0.0


# -- MATLAB imresize -------------------------------------------------------------------------------------------
def test_imresize_half_keeps_constants_and_linear_ramps():
    const = np.full((40, 30), 9.0)
    np.testing.assert_allclose(imresize(const, 0.5), np.full((20, 15), 9.0), atol=1e-12)
    ramp = np.tile(np.arange(64, dtype=float), (16, 1))
    out = imresize(ramp, 0.5)
    assert out.shape == (8, 32)
    # output column i (1-based) samples input position 2i - 0.5 (1-based); exact away from the mirrored borders
    expected = 2 * np.arange(1, 33) - 1.5
    np.testing.assert_allclose(out[:, 3:-3], np.broadcast_to(expected[3:-3], (8, 26)), atol=1e-9)


def test_imresize_antialiases():
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 255.0
    # plain decimation of a one-pixel checkerboard is constant 0 or 255; antialiased it is mid-grey
    assert np.abs(imresize(checker, 0.5)[4:-4, 4:-4] - 127.5).max() < 1.0


# -- features --------------------------------------------------------------------------------------------------
def test_brisque_features_batch_equals_single(camera):
    imgs = np.stack([camera[:128, :160], noisy(camera[:128, :160], 10.0)])
    batch = brisque_features(imgs)
    assert batch.shape == (2, 36) and np.isfinite(batch).all()
    np.testing.assert_allclose(batch[1], brisque_features(imgs[1]), rtol=1e-12)
    # shapes of GGD fits lie on the 0.2:0.001:10 grid
    assert np.isin(np.round(batch[:, [0, 18]], 3), SHAPE_GRID).all()


def test_niqe_patch_features_follow_blocks_and_crop(camera):
    img = camera[:200, :300]  # cropped to 192 x 288: 2 x 3 patches of 96
    feats, sharp = niqe_patch_features(img, 96)
    assert feats.shape == (6, 36) and sharp.shape == (6,)
    coef, local_std = mscn(img[:192, :288])
    # column-major patch order (blkproc): index 1 is the patch below the first one
    np.testing.assert_allclose(feats[1, :18], _niqe_block_features(coef[96:192, 0:96][None])[0], rtol=1e-12)
    assert sharp[3] == pytest.approx(local_std[96:192, 96:192].mean(), rel=1e-12)
    assert sharp[4] == pytest.approx(local_std[0:96, 192:288].mean(), rel=1e-12)
    half, _ = mscn(imresize(img[:192, :288], 0.5))
    np.testing.assert_allclose(feats[1, 18:], _niqe_block_features(half[48:96, 0:48][None])[0], rtol=1e-12)
    assert _blocks(np.arange(16.0).reshape(4, 4), 2)[1, 0, 0] == 8.0


def test_niqe_rejects_images_smaller_than_a_patch():
    with pytest.raises(ValueError, match="smaller than one"):
        niqe_patch_features(np.zeros((50, 200)), 96)


# -- monotonicity on a real photo ------------------------------------------------------------------------------
def test_niqe_increases_with_blur_and_noise(camera, pristine_other_photos):
    blurred = [niqe(blur(camera, s).astype(np.uint8), pristine_other_photos) for s in (0.0, 1.0, 2.0, 3.0)]
    noised = [niqe(noisy(camera, s).astype(np.uint8), pristine_other_photos) for s in (0.0, 8.0, 16.0, 32.0)]
    assert np.all(np.diff(blurred) > 0), blurred
    assert np.all(np.diff(noised) > 0), noised


def test_brisque_quality_decreases_with_blur_and_noise(camera):
    # train on other photos at some distortion levels, test on the cameraman at levels in between
    train_feats, targets = [], []
    for photo in (skimage_data.coffee(), skimage_data.chelsea(), skimage_data.astronaut(), skimage_data.rocket()):
        gray = to_gray(photo)[:256, :256]
        for s in (0.0, 1.0, 2.0, 3.0):
            train_feats.append(brisque_features(blur(gray, s)))
            targets.append(1.0 - 0.2 * s)
        for s in (10.0, 20.0, 30.0):
            train_feats.append(brisque_features(noisy(gray, s)))
            targets.append(1.0 - 0.02 * s)
    model = BRISQUE(["overall"], regressor="train")
    model.fit_features(np.stack(train_feats), np.array(targets)[:, None])
    img = camera[:256, :256]
    by_blur = model.predict_features(brisque_features(np.stack([blur(img, s) for s in (0, 0.8, 1.6, 2.4)])))[:, 0]
    by_noise = model.predict_features(brisque_features(np.stack([noisy(img, s) for s in (0, 6, 14, 26)])))[:, 0]
    assert np.all(np.diff(by_blur) < 0), by_blur
    assert np.all(np.diff(by_noise) < 0), by_noise


# -- model files -----------------------------------------------------------------------------------------------
def test_niqe_model_save_load_round_trip(tmp_path, camera, pristine_other_photos):
    path = tmp_path / "pristine.npz"
    pristine_other_photos.save(path)
    loaded = NiqeModel.load(path)
    np.testing.assert_array_equal(loaded.mu, pristine_other_photos.mu)
    np.testing.assert_array_equal(loaded.cov, pristine_other_photos.cov)
    assert niqe(camera.astype(np.uint8), loaded) == niqe(camera.astype(np.uint8), pristine_other_photos)


def test_niqe_model_reads_the_official_key_names(tmp_path, pristine_other_photos):
    path = tmp_path / "niqe_pris_params.npz"
    np.savez(path, mu_pris_param=pristine_other_photos.mu[None], cov_pris_param=pristine_other_photos.cov,
             gaussian_window=gaussian_window())
    loaded = NiqeModel.load(path)
    assert loaded.mu.shape == (36,) and loaded.patch_size == 96
    np.testing.assert_array_equal(loaded.cov, pristine_other_photos.cov)
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ValueError, match="not a NIQE parameter file"):
        NiqeModel.load(bad)


def test_official_niqe_parameters_score_a_clean_photo_as_natural(camera):
    model = NiqeModel.load(OFFICIAL_NIQE)
    clean = niqe(camera.astype(np.uint8), model)
    # the original's scores for clean natural photos are typically 2-5; blur and noise raise them
    assert 2.0 < clean < 5.0
    assert niqe(blur(camera, 2.0).astype(np.uint8), model) > clean + 1.0
    assert niqe(noisy(camera, 20.0).astype(np.uint8), model) > clean + 1.0


# -- registry wrappers -----------------------------------------------------------------------------------------
def normalise(gray_batch: np.ndarray) -> torch.Tensor:
    """Grey uint8-valued images [B, H, W] -> ImageNet-normalised RGB tensor [B, 3, H, W]."""
    rgb = torch.from_numpy(np.repeat(gray_batch[:, None], 3, axis=1) / 255.0).float()
    return (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_batch_to_gray_undoes_imagenet_normalisation():
    rgb = np.random.default_rng(7).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    x = (torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    x = x / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    np.testing.assert_array_equal(batch_to_gray(x), to_gray(rgb))


def distorted_batches(camera: np.ndarray, size: int = 192) -> list[dict]:
    """Two batches of crops: clean crops rated high, blurred/noisy ones rated by severity."""
    crops = [camera[r:r + size, c:c + size] for r in (0, 192) for c in (0, 192)]
    images, mos = [], []
    for k, crop in enumerate(crops):
        for s, q in ((0.0, 0.9), (1.5, 0.5), (3.0, 0.2)):
            images.append(blur(crop, s))
            mos.append(q + 0.01 * k)
        images.append(noisy(crop, 25.0, seed=k))
        mos.append(0.3)
    images, mos = np.stack(images), np.array(mos)[:, None]
    half = len(images) // 2
    return [{"image": normalise(images[i:j]), "mos_norm": torch.from_numpy(np.repeat(mos[i:j], 2, axis=1)).float()}
            for i, j in ((0, half), (half, len(images)))]


def test_niqe_wrapper_fits_on_best_rated_images_and_ranks_distortions(camera):
    model = build_model("niqe", ["overall", "sharpness"], pristine="train", top_quantile=0.25)
    assert model.calibrate and model.variant == "NIQE, pristine model refitted"
    assert model.trainable is False
    with pytest.raises(RuntimeError, match="not fitted"):
        model({"image": normalise(camera[None, :192, :192])})
    model.fit(iter(distorted_batches(camera)))
    assert model.is_fitted and (model.calib[:, 1] > 0).all()
    test = normalise(np.stack([camera[96:288, 96:288], blur(camera[96:288, 96:288], 2.5)]))
    out = model.predict({"image": test})
    assert set(out) == {"overall", "sharpness"}
    assert out["overall"].shape == (2,) and out["overall"].dtype == torch.float32
    assert ((out["overall"] > 0) & (out["overall"] < 1)).all()
    assert out["overall"][0] > out["overall"][1]
    raw = model.niqe_scores(test)
    assert raw[1] > raw[0]


def test_niqe_wrapper_state_dict_round_trip_through_weights_only_checkpoint(tmp_path, camera):
    model = NIQE(["overall"], pristine="skimage", patch_size=64)
    path = tmp_path / "best.pt"
    torch.save(model.state_dict(), path)
    twin = NIQE(["overall"], pristine="train", patch_size=64)
    twin.load_state_dict(torch.load(path, weights_only=True))
    batch = {"image": normalise(camera[None, :128, :128])}
    torch.testing.assert_close(model(batch)["overall"], twin(batch)["overall"])


def test_niqe_wrapper_loads_the_official_file(camera):
    model = NIQE(["overall"])
    assert model.pristine == "official" and not model.calibrate and model.ready_without_training
    assert model.variant == "NIQE"
    assert model.is_fitted
    raw = float(model.niqe_scores(normalise(camera[None]))[0])
    assert raw == pytest.approx(niqe(camera.astype(np.uint8), NiqeModel.load(OFFICIAL_NIQE)), rel=1e-9)


def test_niqe_counts_flat_images_scored_by_its_fallback(camera):
    """A flat image has no patch with all 36 features defined: the original (Mittal et al. 2013, computequality.m:
    nanmean and nancov NaN) has no score. Its raw NIQE stays NaN, its [0, 1] outputs are the worst (0, whatever the
    calibration: a fitted slope of 5e-4 used to put the old 1e3 stand-in mid-range) and run_notes counts it in
    n_undefined (not n_fallback: no score was made up), as BRISQUE with undefined='nan'; a photo adds nothing."""
    model = NIQE(["q"])
    flat = np.full((2, 96, 96), 255.0)
    out, raw = model.predict_with_raw({"image": normalise(flat)})
    assert torch.isnan(raw).all() and (out["q"] == 0).all()
    out, raw = model.predict_with_raw({"image": normalise(camera[None, :192, :192])})
    assert torch.isfinite(raw).all() and (out["q"] > 0).all()
    assert model.run_notes() == {"variant": "NIQE", "raw_score": "NIQE", "raw_lower_is_better": True,
                                 "trained": False, "n_fallback": 0, "n_undefined": 2}
    model.calib.copy_(torch.tensor([[2.0, 5e-4]], dtype=torch.float64))
    out, _ = model.predict_with_raw({"image": normalise(flat[:1])})
    assert out["q"].tolist() == [0.0] and model.run_notes()["n_undefined"] == 3


def test_niqe_counts_images_scored_with_a_zero_patch_covariance(camera, monkeypatch):
    """No complete patch, yet every feature defined in some patch: MATLAB's nancov is NaN (no complete row), so the
    original has no score; iqalab's zero covariance gives a finite one, counted in n_fallback (not n_undefined)."""
    model = NIQE(["q"])
    photo = camera[None, :192, :192]
    feats, sharp = niqe_patch_features(photo, 96)  # [1, 4, 36], all defined
    assert not undefined_in_original(feats[0])
    holes = feats.copy()
    holes[0, 0, 1] = holes[0, 1, 2] = holes[0, 2, 3] = holes[0, 3, 4] = np.nan  # each patch misses one feature
    assert undefined_in_original(holes[0]) and np.isfinite(niqe_distance(holes[0], model.pristine_model()))
    monkeypatch.setattr(model, "image_features", lambda image: {"features": holes, "sharpness": sharp})
    out, raw = model.predict_with_raw({"image": normalise(photo)})
    assert torch.isfinite(raw).all() and (out["q"] > 0).all()
    assert model.run_notes()["n_fallback"] == 1 and model.run_notes()["n_undefined"] == 0


def test_niqe_too_small_message_says_what_to_do_where():
    """An image under one patch is refused in one line giving its size (width x height), the size needed, and the
    way out in each context: a checkpoint keeps its patch_size (only a larger image), a params-driven run or
    `iqalab score --model niqe` can lower it (for the official model: then not the published NIQE)."""
    with pytest.raises(ImageTooSmallError) as info:
        NIQE(["q"]).predict_with_raw({"image": normalise(np.full((1, 80, 120), 128.0))})
    text = str(info.value)
    assert "\n" not in text and isinstance(info.value, ValueError)
    assert "at least 96px" in text and "this one is 120x80 px (width x height)" in text
    assert "checkpoint" in text and "only a larger image" in text
    assert "experiments.<name>.model.patch_size" in text and "--option patch_size=N" in text
    assert "no longer the published NIQE" in text
    assert (info.value.width, info.value.height, info.value.patch_size) == (120, 80, 96)
    with pytest.raises(ImageTooSmallError) as info:
        NIQE(["q"], pristine="skimage", patch_size=32).predict_with_raw({"image": normalise(np.full((1, 20, 40), 9.0))})
    assert "at least 32px" in str(info.value) and "published" not in str(info.value)


def test_engine_records_niqe_fallback_count_including_test_images(project, toy_dataset, monkeypatch):
    """The predictions JSON's notes count every image whose NIQE is undefined, test images included (the engine
    records run_notes after predicting) and summed over the splits: here the images whose top-left pixel is even
    are made flat."""
    import shutil

    from iqalab.config import parse_params
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    compute = NIQE.compute_features

    def flatten_some(self, gray):
        gray = np.array(gray, dtype=np.float64)
        gray[gray[:, 0, 0] % 2 == 0] = 128.0
        return compute(self, gray)

    monkeypatch.setattr(NIQE, "compute_features", flatten_some)
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": {"name": "niqe", "patch_size": 32},
                                        "splits": ["scene", "random_*"]}))
    preds = train_experiment(params, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    scored = preds.drop_duplicates(["split", "role", "image_id"])
    flat = scored[scored["raw"].isna()]
    assert (flat["role"] == "test").any() and len(flat) < len(scored) and flat["split"].nunique() == 3
    assert meta["notes"]["n_undefined"] == len(flat) and meta["notes"]["n_fallback"] == 0


def test_brisque_svr_buffers_predict_like_sklearn():
    from sklearn.svm import SVR

    rng = np.random.default_rng(8)
    feats = rng.normal(size=(60, 36)) * rng.uniform(0.1, 5, 36) + rng.normal(size=36)
    target = np.stack([1 / (1 + np.exp(-feats[:, 0])), rng.random(60)], axis=1)
    target[5, 1] = np.nan
    model = BRISQUE(["a", "b"], regressor="train", svr_c=10.0, svr_gamma=0.1)
    model.fit_features(feats, target)
    assert int(model.n_support.max()) <= 60 and model.num_parameters() > 72
    lo, hi = feats.min(0), feats.max(0)
    scaled = 2 * (feats - lo) / (hi - lo) - 1
    test = rng.normal(size=(7, 36)) * 2
    for k in range(2):
        ok = ~np.isnan(target[:, k])
        ref = SVR(kernel="rbf", C=10.0, gamma=0.1, epsilon=0.1).fit(scaled[ok], 100 * target[ok, k])
        expected = ref.predict(2 * (test - lo) / (hi - lo) - 1) / 100
        np.testing.assert_allclose(model.predict_features(test)[:, k], expected, atol=1e-9)
    assert scaled.min() == -1 and scaled.max() == 1


def test_brisque_wrapper_fit_forward_and_regressor_file(tmp_path, camera):
    model = build_model("brisque", ["overall", "sharpness"], regressor="train", max_support_vectors=32)
    assert model.variant == "BRISQUE, SVR retrained" and model.raw_score_name is None
    with pytest.raises(RuntimeError, match="not fitted"):
        model({"image": normalise(camera[None, :96, :96])})
    model.fit(distorted_batches(camera, size=96 * 2))
    assert int(model.n_support.max()) <= 16
    test = {"image": normalise(np.stack([camera[:192, 192:], blur(camera[:192, 192:], 3.0)]))}
    out = model.predict(test)
    assert out["overall"].shape == (2,) and out["overall"][0] > out["overall"][1]
    path = tmp_path / "brisque.npz"
    model.save_regressor(path)
    twin = BRISQUE(["overall", "sharpness"], regressor=str(path), max_support_vectors=32)
    assert twin.variant == "BRISQUE (regressor: brisque.npz)"
    torch.testing.assert_close(twin.predict(test)["overall"], out["overall"])
    with pytest.raises(ValueError, match="attributes"):
        BRISQUE(["overall"], regressor=str(path), max_support_vectors=32)


@pytest.mark.parametrize("model", [{"name": "niqe", "pristine": "train", "patch_size": 32, "top_quantile": 0.5},
                                   {"name": "niqe", "patch_size": 32},
                                   {"name": "brisque", "regressor": "train", "max_support_vectors": 64},
                                   {"name": "brisque"}])
def test_engine_fits_checkpoints_and_restores_classical_models(project, toy_dataset, model):
    import shutil

    from iqalab.config import parse_params
    from iqalab.train.engine import load_checkpoint, model_from_checkpoint, train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": model}))
    preds = train_experiment(params, "e", project.root, progress=False)
    assert np.isfinite(preds.pred).all() and set(preds.attribute) == set(toy_dataset.attributes)
    restored = model_from_checkpoint(load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt"))
    assert restored.is_fitted
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert meta["n_params"] == restored.num_parameters(), "the tables count the fitted model (BRISQUE: its SVs)"


def test_niqe_calibration_survives_far_outliers():
    """A near-flat image can give NIQE ~1e4 while the rest lie in 3-20: the logistic fit must still start
    inside its bounds (b >= 1e-3) and come out decreasing (regression: face_sim, patch_size 64)."""
    from scipy.special import expit

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(3, 20, 200), [36550.0]])
    y = expit(3.0 - 0.3 * x)
    a, b = _fit_decreasing_logistic(x, y, np.array([3.0, 0.5]))  # 1 / std(x) ~ 4e-4 was the old start
    assert b >= 1e-3
    assert np.corrcoef(expit(a - b * x[:-1]), y[:-1])[0, 1] > 0.99


def test_niqe_calibration_is_scale_free():
    """NIQE distances of small images reach thousands (portrait_sim: median ~5,000). The decreasing logistic
    must recover a slope below 1e-3 there, and fall back to about the mean when the data rise instead of
    falling (regression: every portrait_sim prediction sat at the bottom of the MOS range)."""
    from scipy.special import expit

    rng = np.random.default_rng(1)
    x = rng.uniform(500.0, 8000.0, 300)
    y = expit(2.0 - 5e-4 * x)
    a, b = _fit_decreasing_logistic(x, y, np.array([3.0, 0.5]))
    assert 0 < b < 1e-3
    np.testing.assert_allclose(expit(a - b * x), y, atol=0.01)
    rising = rng.uniform(0.2, 0.8, 300)
    rising.sort()
    a, b = _fit_decreasing_logistic(np.sort(x), rising, np.array([3.0, 0.5]))
    assert b > 0
    assert abs(expit(a - b * np.sort(x)).mean() - rising.mean()) < 0.05


# -- calibration against the original MATLAB releases (pyiqa's calibration images) ----------------------------
CALIBRATION = Path(__file__).parent / "data" / "calibration" / "tid2013"


@pytest.fixture(scope="module")
def official_scores():
    import pandas as pd

    return pd.read_csv(CALIBRATION / "official.csv").set_index("image")


def test_score_cli_niqe_matches_the_original_release_within_1_percent(tmp_path, official_scores):
    """`iqalab score --model niqe` (LIVE pristine model, rgb2gray, 96 px patches, full resolution) against the
    original computequality.m on five TID2013 images: within 1 % on every image (measured: at most 0.71 %)."""
    import pandas as pd

    from iqalab.__main__ import main

    out = tmp_path / "niqe.csv"
    assert main(["-q", "score", "--model", "niqe", "--out", str(out), str(CALIBRATION)]) in (0, None)
    ours = pd.read_csv(out).assign(image=lambda f: f.path.map(lambda p: Path(p).name)).set_index("image")
    assert len(ours) == 5
    rel = (ours["niqe"] / official_scores.loc[ours.index, "niqe_official"] - 1.0).abs()
    assert (rel < 0.01).all(), rel.to_dict()


def test_brisque_live_model_matches_the_original_release(official_scores):
    """The LIVE-trained SVR (allmodel/allrange) against brisquescore.m. Tolerances by flatness: I03 and I04
    (1.5 % and 0 % of pixels with local deviation < 1e-3) within 0.1 % (BRISQUE points where the score is near 0:
    0.01); I06 and I08 (0.6 %, 2 % flat) within 0.5 points; I19 (30 % flat) within 10 %. In flat regions the
    sign of ~1e-14 MSCN values depends on the summation order of the local filter, which moves the AGGD sides."""
    from iqalab.models.nss import read_image

    model = build_model("brisque", ["q"])
    assert model.variant == "BRISQUE" and model.raw_score_name == "BRISQUE" and model.ready_without_training
    for name, row in official_scores.iterrows():
        image = torch.from_numpy(read_image(CALIBRATION / name)).permute(2, 0, 1)[None]
        from iqalab.data.loaders import normalise_batch

        _, raw = model.predict_with_raw({"image": normalise_batch(image)})
        ours, ref = float(raw[0]), float(row["brisque_official"])
        if name in ("I03.png", "I04.png"):
            assert abs(ours - ref) <= max(1e-3 * abs(ref), 0.01), (name, ours, ref)
        elif name in ("I06.png", "I08.png"):
            assert abs(ours - ref) <= 0.5, (name, ours, ref)
        else:
            assert abs(ours - ref) <= 0.1 * abs(ref), (name, ours, ref)


def test_brisque_scores_flat_and_clipped_images(camera):
    """No image is dropped: an all-white image and a photo with a clipped sky get finite scores, and the flat one
    is counted as scored by the fallback (its original features are undefined)."""
    model = BRISQUE(["q"])
    flat = np.full((1, 96, 96), 255.0)
    clipped = camera[None, :192, :192].copy()
    clipped[:, :96] = 255.0
    out, raw = model.predict_with_raw({"image": normalise(np.concatenate([flat, flat]))})
    assert torch.isfinite(raw).all() and model.n_fallback == 2
    out, raw = model.predict_with_raw({"image": normalise(clipped)})
    assert torch.isfinite(raw).all() and model.n_fallback == 2
    assert model.run_notes() == {"variant": "BRISQUE", "raw_score": "BRISQUE", "raw_lower_is_better": True,
                                 "trained": False, "n_fallback": 2}


# -- the engine's one batch contract for fit and predict -------------------------------------------------------
NON_TRAINABLE = [{"name": "niqe", "pristine": "train", "patch_size": 32, "top_quantile": 0.5},
                 {"name": "brisque", "regressor": "train", "max_support_vectors": 64}]


def test_the_batch_contract_test_covers_every_model_that_fits():
    """NON_TRAINABLE names every registered model that overrides ``IQAModel.fit`` (fitted without gradient steps),
    so a new one cannot skip the contract test below."""
    from iqalab.models import available, get_model_class
    from iqalab.models.base import IQAModel

    fitting = {name for name in available() if get_model_class(name).fit is not IQAModel.fit}
    assert fitting == {spec["name"] for spec in NON_TRAINABLE}


@pytest.mark.parametrize("spec", NON_TRAINABLE)
def test_fit_receives_exactly_what_predict_receives(project, toy_dataset, spec, monkeypatch):
    """Every non-trainable model: the batches `fit` gets in training equal, image for image, the batches the
    prediction path feeds the model for the same images (regression: fit used to get raw uint8 batches while
    prediction got normalised ones, so BRISQUE's SVR and NIQE's pristine model were fitted on misread images)."""
    import shutil

    from iqalab.config import parse_params
    from iqalab.data.cache import ImageCache
    from iqalab.data.loaders import CamStats
    from iqalab.data.schema import read_dataset
    from iqalab.models import get_model_class
    from iqalab.train.engine import eval_items_for, predict_items, train_experiment

    from .conftest import toy_params

    cls = get_model_class(spec["name"])
    seen: dict[str, dict[str, torch.Tensor]] = {"fit": {}, "predict": {}}
    original_fit, original_predict = cls.fit, cls.predict_with_raw

    def recording_fit(self, batches):
        def record():
            for batch in batches:
                for k, image_id in enumerate(batch["image_id"]):
                    seen["fit"][image_id] = batch["image"][k].clone()
                yield batch
        return original_fit(self, record())

    def recording_predict(self, batch):
        for k, image_id in enumerate(batch["image_id"]):
            seen["predict"][image_id] = batch["image"][k].clone()
        return original_predict(self, batch)

    monkeypatch.setattr(cls, "fit", recording_fit)
    monkeypatch.setattr(cls, "predict_with_raw", recording_predict)
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": spec}))
    train_experiment(params, "e", project.root, progress=False)
    assert seen["fit"], "fit saw no batch"
    fitted = dict(seen["fit"])
    seen["predict"].clear()
    ds = read_dataset(project.root / "build" / "datasets" / "toy")
    model = build_model(spec["name"], ds.attributes, **{k: v for k, v in spec.items() if k != "name"})
    ids = sorted(fitted)
    items = eval_items_for(model, ids, None, ds=ds, cache=ImageCache(ds, params.dataset("toy").cache_size),
                           inputs=model.inputs, cam_stats=CamStats.fit(ds.images), seed=0)
    model.fitted.fill_(1.0)
    predict_items(model, items, 4, torch.device("cpu"))
    assert set(seen["predict"]) == set(ids)
    for image_id in ids:
        torch.testing.assert_close(seen["predict"][image_id], fitted[image_id], rtol=0, atol=0)
    # what the model reads is a photo: ImageNet-normalised values, not 0-255 integers
    some = fitted[ids[0]]
    assert some.dtype == torch.float32 and -3.0 < float(some.min()) and float(some.max()) < 3.0


def test_retrained_brisque_fits_its_training_images(project, toy_dataset):
    """The retrained SVR (C = 1024) nearly interpolates its training targets when fit and predict see the same
    pixels: its training-set SRCC is high. (With the old fit path it was near zero.)"""
    import shutil

    from scipy.stats import spearmanr

    from iqalab.config import parse_params
    from iqalab.data.cache import ImageCache
    from iqalab.data.loaders import CamStats
    from iqalab.data.schema import read_dataset
    from iqalab.train.engine import (
        eval_items_for,
        load_checkpoint,
        model_from_checkpoint,
        predict_items,
        train_experiment,
    )

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    spec = {"name": "brisque", "regressor": "train", "max_support_vectors": 64}
    params = parse_params(toy_params(e={"dataset": "toy", "model": spec}))
    train_experiment(params, "e", project.root, progress=False)
    model = model_from_checkpoint(load_checkpoint(project.root / "build" / "models" / "e" / "scene" / "best.pt"))
    ds = read_dataset(project.root / "build" / "datasets" / "toy")
    train_ids = ds.split_ids("scene", "train")
    items = eval_items_for(model, train_ids, None, ds=ds, cache=ImageCache(ds, params.dataset("toy").cache_size),
                           inputs=model.inputs, cam_stats=CamStats.fit(ds.images), seed=0)
    pred = predict_items(model, items, 4, torch.device("cpu"))
    assert spearmanr(pred[:, 0], items.mos_norm[:, 0]).statistic > 0.9


def test_predictions_record_the_raw_score_and_the_variant(project, toy_dataset):
    import shutil

    import pandas as pd

    from iqalab.config import parse_params
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": {"name": "niqe", "patch_size": 32}}))
    preds = train_experiment(params, "e", project.root, progress=False)
    meta = json.loads((project.root / "results" / "predictions" / "e.json").read_text())
    assert meta["notes"] == {"variant": "NIQE", "raw_score": "NIQE", "raw_lower_is_better": True, "trained": False,
                             "n_fallback": 0, "n_undefined": 0}
    saved = pd.read_parquet(project.root / "results" / "predictions" / "e.parquet")
    assert np.isfinite(saved["raw"]).all() and (saved["raw"] > 0).all()
    # the [0, 1] output is the fixed decreasing map of the raw score: same order, opposite sign
    one = preds[preds.attribute == preds.attribute.iloc[0]]
    assert np.corrcoef(np.argsort(np.argsort(one.pred)), np.argsort(np.argsort(-one.raw)))[0, 1] > 0.999


# -- how the tables read the classical rows --------------------------------------------------------------------
def test_tables_correlate_the_negated_published_score_and_say_so():
    """An untrained NIQE row is scored on -raw (positive SRCC for a good metric, as the papers print it), has no
    raw RMSE/MAE, and the caption names the variant and the sign convention; a retrained BRISQUE is scored on its
    predictions and labelled as retrained."""
    import pandas as pd
    from scipy.stats import spearmanr

    from iqalab.analysis.evaluation import EvalInputs, compute_scores
    from iqalab.paper_tables.common import baseline_notes

    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 40)
    raw = 10.0 - 1.5 * mos + rng.normal(0, 0.5, 40)  # a NIQE-like score: lower is better
    pred = rng.uniform(0, 5, 40)  # unrelated [0,1]-map values: must not be what is scored
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "attribute": "overall", "pred": pred,
                          "mos": mos, "split": "s", "role": "test", "scene": "a", "model": "niqe", "dataset": "d",
                          "experiment": "niqe_d", "raw": raw})
    notes = {"variant": "NIQE", "raw_score": "NIQE", "raw_lower_is_better": True, "trained": False}
    meta = {"niqe_d": {"train_dataset": "d", "mos_range": [1, 5], "notes": notes, "tables": []}}
    scores = compute_scores(EvalInputs(frame, meta)).set_index("metric")["value"]
    assert scores["srcc"] == pytest.approx(spearmanr(-raw, mos).statistic)
    assert scores["srcc"] > 0.8 and np.isnan(scores["mae"]) and np.isnan(scores["rmse"])
    retrained = {"variant": "BRISQUE, SVR retrained", "raw_score": None, "trained": True, "n_fallback": 3}
    meta2 = {"b_d": {"train_dataset": "d", "mos_range": [1, 5], "notes": retrained, "tables": []}}
    scores2 = compute_scores(EvalInputs(frame.assign(experiment="b_d", raw=np.nan), meta2)).set_index("metric")
    assert scores2.loc["srcc", "value"] == pytest.approx(spearmanr(pred, mos).statistic)
    text = " ".join(baseline_notes(meta | meta2, {"niqe_d": "NIQE", "b_d": "BRISQUE, SVR retrained"}))
    assert "NIQE = NIQE" in text and "negated score for NIQE" in text and "LIVE pristine model" in text
    assert "SVR retrained on each training split" in text and "BRISQUE, SVR retrained: 3" in text
    # a NIQE row on its [0, 1] predictions (refitted) kept its undefined images at the worst score: stated; the
    # published row correlates the raw score, where they are NaN and left out (undefined_notes counts them)
    refit = {"variant": "NIQE, pristine model refitted", "raw_score": "NIQE", "trained": True, "n_undefined": 2}
    both = {"niqe_d": {"notes": notes | {"n_undefined": 5}}, "r_d": {"notes": refit}}
    text = " ".join(baseline_notes(both, {"niqe_d": "NIQE", "r_d": "NIQE (refitted)"}))
    assert "predicted as the worst (0) and kept in the metrics, summed over the images every split scored: " \
           "NIQE (refitted): 2" in text and "NIQE: 5" not in text


def test_scorer_gives_a_classical_checkpoint_images_at_native_resolution(project, toy_dataset, tmp_path):
    """gMAD, camera tuning and `iqalab score --checkpoint` score NIQE at each image's own size (no square
    resize), as training predicted it, and images of different sizes in one call."""
    import shutil

    from iqalab.config import parse_params
    from iqalab.inference import Scorer
    from iqalab.models.niqe import NiqeModel, niqe
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    params = parse_params(toy_params(e={"dataset": "toy", "model": {"name": "niqe", "patch_size": 32}}))
    train_experiment(params, "e", project.root, progress=False)
    scorer = Scorer(project.root / "build" / "models" / "e" / "scene" / "best.pt", "cpu")
    assert scorer.native
    photo = skimage_data.astronaut()
    images = [photo[:200, :160], photo[100:196, 50:306]]
    scores = scorer.score(images)
    model = NiqeModel.load(OFFICIAL_PRISTINE)
    model.patch_size = 32
    expected = [niqe(im, model) for im in images]
    got = [3.0 - 0.5 * v for v in expected]  # the fixed map sigmoid(3 - 0.5 niqe) in MOS units
    lo, hi = scorer.lo, scorer.hi
    for k, value in enumerate(got):
        assert scores[scorer.attributes[0]][k] == pytest.approx(lo + (hi - lo) / (1 + np.exp(-value)), rel=1e-5)


def test_captions_say_where_regions_came_from_and_how_many_test_images_lacked_one():
    from iqalab.paper_tables.common import region_notes

    meta = {"t": {"regions": ["person_box"], "regions_detector": {"person_box": ["dataset", "face_rule"]},
                  "regions_missing": 4, "allow_missing_regions": True},
            "b": {}}
    text = " ".join(region_notes(meta, {"t": "TuningIQA", "b": "Baseline"}))
    assert "human regions from TuningIQA: dataset, face_rule" in text
    assert "TuningIQA: 4 (allow_missing_regions)" in text and "Baseline" not in text
    assert region_notes({"b": {}}, {"b": "Baseline"}) == []


def test_captions_list_the_paper_rows_that_do_not_run_here():
    from iqalab.comparison_rows import rows_not_run
    from iqalab.paper_tables.common import not_run_notes

    text = " ".join(not_run_notes("reqa_table2"))
    assert "HOSA (cannot run)" in text and "ILNIQE (zero-shot only)" in text
    assert len(text.split(";")) == len(rows_not_run("reqa_table2"))
    assert not_run_notes(None) == [] and not_run_notes("fhiqa_table1") == []


# -- features computed once per image (issue 30) and the BRISQUE switches of issue 30 ------------------------------
@pytest.mark.parametrize("spec", [{"name": "brisque", "regressor": "train", "max_support_vectors": 64},
                                  {"name": "niqe", "pristine": "train", "patch_size": 32, "top_quantile": 0.5}])
def test_features_are_computed_once_per_image_across_splits(project, toy_dataset, tmp_path, monkeypatch, spec):
    """The train stage caches classical features in build/features: with three splits sharing the same 20
    images, each image is analysed once (counted), and the predictions equal those computed without a cache."""
    import shutil

    import pandas as pd

    from iqalab.config import parse_params
    from iqalab.models import get_model_class
    from iqalab.models.nss import pixel_key
    from iqalab.stages import train
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    computed: list[str] = []
    cls = get_model_class(spec["name"])
    real = cls.compute_features

    def counting(self, gray):
        computed.extend(pixel_key(g.astype(np.uint8)) for g in gray)  # distinct photos have distinct grey images
        return real(self, gray)

    monkeypatch.setattr(cls, "compute_features", counting)
    exp = {"dataset": "toy", "model": spec, "splits": ["scene", "random_00", "random_01"]}
    params = parse_params(toy_params(e=exp))
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    cached = train.run(params, "e", project.root, progress=False)
    assert len(computed) == len(set(computed)) == len(toy_dataset.images), "each image analysed exactly once"
    assert any((project.root / "build" / "features").rglob("*.npz"))

    computed.clear()
    other = tmp_path / "uncached"
    shutil.copytree(toy_dataset.root, other / "build" / "datasets" / "toy")
    plain = train_experiment(params, "e", other, progress=False)  # the engine alone: no feature cache
    assert len(computed) > 2 * len(toy_dataset.images), "without the cache every split recomputes"
    cols = ["image_id", "attribute", "split", "role"]
    a, b = cached.sort_values(cols).reset_index(drop=True), plain.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[[*cols, "pred", "raw"]], b[[*cols, "pred", "raw"]])


def test_feature_cache_key_changes_with_settings_and_survives_a_corrupt_file(tmp_path, camera):
    """Another feature setting is another cache folder; a damaged cache file is recomputed, not trusted."""
    from iqalab.models.nss import feature_cache

    batch = {"image": normalise(camera[None, :160, :160].copy())}
    with feature_cache(tmp_path):
        gray_model, y_model = BRISQUE(["q"]), BRISQUE(["q"], color="y")
        first = gray_model.features(batch["image"])
        y_model.features(batch["image"])
        folders = sorted(p.name for p in tmp_path.iterdir())
        assert len(folders) == 2 and all(name.startswith("brisque-") for name in folders)
        (stored,) = gray_model._store.folder.rglob("*.npz")
        stored.write_bytes(b"not an npz")
        again = BRISQUE(["q"])
        np.testing.assert_array_equal(again.features(batch["image"]), first)
        assert again._store.misses == 1 and again._store.hits == 0
        reader = BRISQUE(["q"])
        np.testing.assert_array_equal(reader.features(batch["image"]), first)
        assert reader._store.hits == 1 and reader._store.misses == 0
    np.testing.assert_array_equal(np.load(stored)["features"][None], first)  # rewritten whole


def test_brisque_counts_a_shared_live_svr_once():
    """The LIVE SVR serves every attribute: 774 support vectors x (36 + 1) + 1 intercept + 72 scaling bounds,
    whatever the number of attributes; retrained SVRs (one per attribute) are each counted."""
    one, five = BRISQUE(["q"]), BRISQUE(["a", "b", "c", "d", "e"])
    n_sv = int(one.n_support[0])
    assert n_sv == 774
    assert one.num_parameters() == five.num_parameters() == n_sv * 37 + 1 + 72
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 36))
    trained = BRISQUE(["a", "b"], regressor="train", max_support_vectors=64)
    trained.fit_features(feats, rng.uniform(size=(40, 2)))
    n = trained.n_support.tolist()
    assert trained.num_parameters() == sum(n) * 37 + 2 + 72


def test_brisque_can_return_the_original_nan_for_flat_images(camera):
    """undefined='nan' is the MATLAB behaviour: a flat image's score is NaN (counted), a textured one is unchanged;
    a retrained SVR leaves the undefined image out of training instead of failing."""
    flat = np.full((1, 96, 96), 255.0)
    photo = camera[None, :192, :192].copy()
    default, original = BRISQUE(["q"]), BRISQUE(["q"], undefined="nan")
    _, raw_flat = original.predict_with_raw({"image": normalise(flat)})
    assert torch.isnan(raw_flat).all() and original.n_undefined == 1 and original.n_fallback == 0
    assert original.run_notes()["n_undefined"] == 1
    _, raw_default = default.predict_with_raw({"image": normalise(flat)})
    assert torch.isfinite(raw_default).all() and "n_undefined" not in default.run_notes()
    torch.testing.assert_close(original.predict_with_raw({"image": normalise(photo)})[1],
                               default.predict_with_raw({"image": normalise(photo)})[1], rtol=0, atol=0)
    feats = brisque_features(np.concatenate([flat[:, :96, :96], photo[:, :96, :96], photo[:, 96:, 96:],
                                             photo[:, :96, 96:]]), undefined="nan")
    assert np.isnan(feats[0]).any() and np.isfinite(feats[1:]).all()
    retrained = BRISQUE(["q"], regressor="train", undefined="nan", max_support_vectors=16)
    retrained.fit_features(feats, np.array([[0.1], [0.5], [0.7], [0.9]]))
    assert int(retrained.n_support[0]) <= 3
    with pytest.raises(ValueError, match="undefined"):
        BRISQUE(["q"], undefined="drop")


# -- classical checkpoints through `iqalab score` (README, "Scoring your own images") ------------------------------
def _classical_checkpoint(path: Path, model: torch.nn.Module, name: str, kwargs: dict) -> Path:
    """``model`` saved as a training checkpoint (the config the engine writes, the toy's MOS range [1, 5])."""
    from iqalab.train.engine import save_checkpoint

    save_checkpoint(path, {"model": model.state_dict(), "config": {
        "model_name": name, "model_kwargs": kwargs, "attributes": list(model.attributes), "mos_range": [1.0, 5.0],
        "cache_size": 64, "eval_crop": None}})
    return path


def test_a_live_brisque_checkpoint_gives_raw_brisque_beside_its_fixed_map_into_the_mos_range(tmp_path):
    """README: a classical checkpoint that scores as published (BRISQUE with the LIVE SVR) gives attribute scores
    that are a fixed monotone map of the raw score into the dataset's range (BRISQUE: ``sigmoid((50 - brisque) /
    20)``, ``models/brisque.py``), with the raw published score beside them in ``raw_brisque`` (lower = better).
    ``score_images`` on two photos: the column exists, equals the model's own ``predict_with_raw`` raw score on the
    same pixels (each image at full resolution), and every attribute is ``1 + 4 * sigmoid((50 - raw) / 20)``."""
    from PIL import Image

    from iqalab.stages.score import score_images

    attrs = ["overall", "sharpness"]
    model = BRISQUE(attrs, regressor="live")
    ckpt = _classical_checkpoint(tmp_path / "brisque.pt", model, "brisque", {"regressor": "live"})
    photos = [skimage_data.astronaut(), skimage_data.coffee()[:300, 100:500]]
    files = []
    for k, photo in enumerate(photos):
        files.append(tmp_path / f"photo{k}.png")
        Image.fromarray(photo).save(files[-1])
    frame = score_images(ckpt, files, progress=False, device="cpu", batch_size=2)
    assert "raw_brisque" in frame.columns and frame["path"].tolist() == [str(f) for f in files]
    from iqalab.data.loaders import normalise_batch, to_chw_uint8

    own = np.array([float(model.predict_with_raw({"image": normalise_batch(to_chw_uint8(p)[None])})[1][0])
                    for p in photos])
    np.testing.assert_allclose(frame["raw_brisque"].to_numpy(), own, rtol=1e-9)
    assert np.ptp(own) > 1.0, "two different published scores: a swapped or constant column would show"
    mapped = 1.0 + 4.0 / (1.0 + np.exp(-(50.0 - own) / 20.0))
    for a in attrs:
        np.testing.assert_allclose(frame[a].to_numpy(), mapped, rtol=1e-6)


def test_a_retrained_brisque_keeps_svr_outputs_outside_the_mos_range_in_prediction_and_scoring(tmp_path, camera):
    """README: a retrained BRISQUE (``regressor: train``) is an SVR fitted to MOS whose output is not clipped to
    the range, in training predictions and in ``iqalab score`` alike.

    Fitted (through ``fit``, on prepared batches) on four blurs of one crop rated 0, 1, 1, 0 (normalised MOS),
    the RBF SVR (C = 1024) overshoots between and beyond its training images: a blur of 1.0 is predicted above 1
    and one of 1.8 below 0 (about 1.24 and -0.26; scikit-learn's SVR on the same scaled features says the same).
    ``predict_with_raw`` (the engine's prediction path) keeps both outside [0, 1], and ``score_images`` on a
    checkpoint of the model scores the two files outside the MOS range [1, 5], at ``1 + 4 * output``."""
    from PIL import Image
    from sklearn.svm import SVR

    from iqalab.stages.score import score_images

    crop = camera[:128, :128]
    train = np.stack([blur(crop, s) for s in (0.4, 0.8, 1.2, 1.6)])
    target = np.array([0.0, 1.0, 1.0, 0.0])
    kwargs = {"regressor": "train", "max_support_vectors": 16}
    model = BRISQUE(["q"], **kwargs)
    model.fit([{"image": normalise(train), "mos_norm": torch.from_numpy(target[:, None]).float()}])
    probes = np.stack([blur(crop, s) for s in (1.0, 1.8)])
    out = model.predict_with_raw({"image": normalise(probes)})[0]["q"].double().numpy()
    assert out[0] > 1.05 and out[1] < -0.05, out

    # the SVR's own output, unclipped: scikit-learn on the same scaled features
    svr = SVR(kernel="rbf", C=1024.0, gamma=0.05, epsilon=0.1)
    svr.fit(model.scale_features(model.features(normalise(train))), 100.0 * target)
    reference = svr.predict(model.scale_features(model.features(normalise(probes)))) / 100.0
    np.testing.assert_allclose(out, reference, atol=1e-6)

    ckpt = _classical_checkpoint(tmp_path / "brisque.pt", model, "brisque", kwargs)
    files = []
    for k, gray in enumerate(probes):
        files.append(tmp_path / f"probe{k}.png")
        Image.fromarray(gray.astype(np.uint8)).save(files[-1])
    frame = score_images(ckpt, files, progress=False, device="cpu")
    assert "raw_brisque" not in frame.columns, "a retrained SVR has no published score"
    scored = frame["q"].to_numpy()
    assert scored[0] > 5.0 and scored[1] < 1.0, scored
    np.testing.assert_allclose(scored, 1.0 + 4.0 * out, rtol=1e-6)
