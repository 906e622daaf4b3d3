"""ScaleMicroBatchSampler (REQA Sec. III-C.1): one image per quality scale in every micro-batch, determinism,
epoch coverage, MOS-less images, odd batch sizes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch.utils.data import DataLoader, TensorDataset

from iqalab.data.samplers import ScaleMicroBatchSampler, quality_scales


def skewed_mos(n: int, seed: int = 0) -> np.ndarray:
    """Narrow, peaked MOS like authentic datasets (few Bad / Excellent images)."""
    return np.random.default_rng(seed).beta(5, 3, size=n)


def micro_batches(sampler: ScaleMicroBatchSampler) -> list[list[int]]:
    out = []
    for batch in sampler:
        assert len(batch) % sampler.n_scales == 0
        out += [batch[i:i + sampler.n_scales] for i in range(0, len(batch), sampler.n_scales)]
    return out


@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_every_micro_batch_has_one_image_per_scale(binning):
    mos = np.random.default_rng(1).uniform(0, 1, 203)
    sampler = ScaleMicroBatchSampler(mos, batch_size=20, seed=3, binning=binning)
    micro = micro_batches(sampler)
    assert len(micro) == 203 // 5
    for mb in micro:
        assert sampler.scale_of[mb].tolist() == [0, 1, 2, 3, 4]


def test_quantile_scales_match_ranks():
    mos = np.random.default_rng(2).normal(0.6, 0.1, 100)  # distinct values
    expected = ((rankdata(mos) - 1) * 5 // 100).astype(int)
    np.testing.assert_array_equal(quality_scales(mos, 5, "quantile"), expected)


def test_uniform_scales_are_acr_tiers_and_small_tiers_are_cycled():
    mos = np.concatenate([[0.05, 0.9], np.full(30, 0.3), np.full(30, 0.5), np.full(30, 0.7)])
    np.testing.assert_array_equal(quality_scales(mos, 5, "uniform"), np.minimum((mos * 5).astype(int), 4))
    sampler = ScaleMicroBatchSampler(mos, batch_size=10, seed=0, binning="uniform")
    micro = micro_batches(sampler)
    assert len(micro) == len(mos) // 5
    for mb in micro:
        assert sampler.scale_of[mb].tolist() == [0, 1, 2, 3, 4]
    bad = [mb[0] for mb in micro]
    assert set(bad) == {0}  # the only Bad image is reused in every micro-batch


def test_uniform_falls_back_to_quantiles_when_a_tier_is_empty(caplog):
    mos = np.random.default_rng(0).uniform(0.45, 0.75, 50)  # no Bad, Poor or Excellent image
    with caplog.at_level(logging.WARNING, logger="iqalab.data.samplers"):
        scales = quality_scales(mos, 5, "uniform")
    assert "quantile" in caplog.text
    np.testing.assert_array_equal(scales, quality_scales(mos, 5, "quantile"))


def test_quantile_epoch_covers_images_at_most_once():
    mos = skewed_mos(153)
    sampler = ScaleMicroBatchSampler(mos, batch_size=25, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-(153 // 5) // 5)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == 5 * (153 // 5)
    assert all(len(b) == 25 for b in batches[:-1])


def test_deterministic_given_seed():
    mos = skewed_mos(120)
    a = list(ScaleMicroBatchSampler(mos, 20, seed=5))
    b = list(ScaleMicroBatchSampler(mos, 20, seed=5))
    c = list(ScaleMicroBatchSampler(mos, 20, seed=6))
    assert a == b
    assert a != c


def test_images_without_mos_are_never_sampled():
    mos = skewed_mos(60)
    missing = np.array([3, 17, 42])
    mos[missing] = np.nan
    sampler = ScaleMicroBatchSampler(mos, 10, seed=0)
    flat = {i for b in sampler for i in b}
    assert not flat & set(missing.tolist())
    assert (sampler.scale_of[missing] == -1).all()
    assert len(flat) == 5 * (57 // 5)


@pytest.mark.parametrize(("batch_size", "expected"), [(12, 10), (3, 5), (5, 5), (40, 40)])
def test_batch_size_rounds_to_micro_batches(batch_size, expected, caplog):
    with caplog.at_level(logging.WARNING, logger="iqalab.data.samplers"):
        sampler = ScaleMicroBatchSampler(skewed_mos(100), batch_size, seed=0)
    assert sampler.batch_size == expected
    assert len(next(iter(sampler))) == expected
    assert ("multiple" in caplog.text) == (batch_size % 5 != 0)


def test_drop_last():
    sampler = ScaleMicroBatchSampler(skewed_mos(52), 20, seed=0, drop_last=True)  # 10 micro-batches, 4 per batch
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    assert all(len(b) == 20 for b in batches)


def test_too_few_images_raise():
    with pytest.raises(ValueError, match="at least 5"):
        ScaleMicroBatchSampler(np.array([0.1, 0.2, np.nan, 0.4, 0.5]), 5, seed=0)


def test_dataloader_batches_are_ordered_by_scale_inside_micro_batches():
    mos = skewed_mos(80, seed=4)
    dataset = TensorDataset(torch.as_tensor(mos, dtype=torch.float32))
    loader = DataLoader(dataset, batch_sampler=ScaleMicroBatchSampler(mos, 20, seed=1))
    for (values,) in loader:
        groups = values.reshape(-1, 5)
        assert (groups[:, 1:] >= groups[:, :-1]).all()  # quantile scales: MOS rises along each micro-batch
