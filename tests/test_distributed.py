"""DDP training launched by torchrun (2 CPU processes, gloo) and the torch.compile option of the engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import BatchSampler, RandomSampler

from iqalab.config import parse_params
from iqalab.train import distributed
from iqalab.train.engine import train_experiment

from .conftest import toy_params

TINY = {"name": "backbone_mlp", "backbone": "mobilenetv3_small_050", "hidden": 16}


def test_sharded_batches_cover_each_global_batch_once():
    batches = list(BatchSampler(RandomSampler(range(23), generator=torch.Generator().manual_seed(3)), 8, False))
    shards = [list(distributed.ShardedBatchSampler(batches, rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3  # 8, 8, 7 rows: every rank steps three times
    for k, batch in enumerate(batches):
        assert sorted(shards[0][k] + shards[1][k]) == sorted(batch)
        assert abs(len(shards[0][k]) - len(shards[1][k])) <= 1


def test_batches_smaller_than_the_world_are_dropped_on_every_rank():
    batches = [[0, 1, 2, 3], [4, 5], [6]]
    for rank in range(3):
        sampler = distributed.ShardedBatchSampler(batches, rank, 3)
        assert len(sampler) == 1 and list(sampler) == [[0, 1, 2, 3][rank::3]]
    with pytest.raises(ValueError, match="rank 3 outside world size 3"):
        distributed.ShardedBatchSampler(batches, 3, 3)
    assert distributed.ShardedBatchSampler(batches, 0, 3).dropped == 2


def test_reqa_micro_batches_are_sharded_whole():
    """REQA's batches are 5-image micro-batches, one image per quality scale (Sec. III-C): each rank gets whole
    micro-batches, so every group of 5 a rank's coarse loss reads was drawn together, one per scale."""
    from iqalab.data.samplers import ScaleMicroBatchSampler

    mos = np.random.default_rng(0).uniform(0, 1, 200)
    sampler = ScaleMicroBatchSampler(mos, 20, seed=1)
    assert sampler.group_size == 5
    global_batches = list(sampler)
    scale_of = sampler.scale_of
    for world in (2, 3):
        shards = [distributed.ShardedBatchSampler(global_batches, r, world, sampler.group_size) for r in range(world)]
        for k, batch in enumerate(shards[0].batches):
            micro = [batch[i:i + 5] for i in range(0, len(batch), 5)]
            taken = [list(s)[k] for s in shards]
            assert sorted(sum(taken, [])) == sorted(batch)  # every micro-batch dealt to one rank
            for part in taken:
                assert len(part) % 5 == 0 and part
                for i in range(0, len(part), 5):
                    group = part[i:i + 5]
                    assert group in micro  # a micro-batch as drawn
                    assert sorted(scale_of[group].tolist()) == [0, 1, 2, 3, 4]
    rows = distributed.ShardedBatchSampler(global_batches, 0, 2)  # one row at a time: groups would be mixed
    assert any(list(rows)[0][i:i + 5] not in [b[j:j + 5] for b in global_batches for j in range(0, 20, 5)]
               for i in range(0, 10, 5))


def test_single_process_helpers_are_identities():
    info = distributed.info()
    assert not info.enabled and info.is_main
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    idx = distributed.shard_indices(6, info)
    np.testing.assert_array_equal(distributed.gather_rows(rows[idx], idx, 6, info), rows)
    sharded = distributed.DistInfo(rank=1, world_size=4)
    np.testing.assert_array_equal(distributed.shard_indices(10, sharded), [1, 5, 9])


def test_env_info_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_info() == distributed.DistInfo(1, 2, 1)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.env_info()


def _copy_toy(project, toy_dataset) -> None:
    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")


def _smoke(name: str) -> dict:
    from iqalab.models import get_model_class

    return {"name": name, **get_model_class(name).smoke_params}


def _torchrun_train(project, model: dict, batch_size: int) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m iqalab train e``: ``model`` on the toy data set (copied into ``project``
    by the caller), 2 epochs on the CPU, one OpenMP thread per rank."""
    params = toy_params(e={"dataset": "toy", "model": model, "train": {"epochs": 2, "batch_size": batch_size,
                                                                        "device": "cpu"}})
    params_file = project.root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, "IQALAB_WORKDIR": str(project.root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "iqalab", "--params", str(params_file), "train", "e"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model", [TINY, "tuningiqa", "reqa"], ids=["backbone_mlp", "pairs", "batch_sampler"])
def test_torchrun_two_processes_train_one_synchronised_model(project, toy_dataset, model):
    """``torchrun --nproc_per_node 2 -m iqalab train``: gloo DDP on CPU; rank 0 alone writes results.

    Covers a plain regressor, a pair-trained model (TuningIQA) and one with its own batch sampler (REQA).
    """
    _copy_toy(project, toy_dataset)
    model = _smoke(model) if isinstance(model, str) else model
    if model["name"] == "tuningiqa":  # the toy photos have no person boxes: ask for the whole-image fallback
        model["allow_missing_regions"] = True
    # REQA's batches are whole 5-image micro-batches sharded micro-batch by micro-batch: 10 gives each of the 2
    # ranks one (at 8 a batch holds one micro-batch, fewer than the ranks, and every batch would be skipped)
    proc = _torchrun_train(project, model, batch_size=10 if model["name"] == "reqa" else 8)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sums = dict(re.findall(r"rank (\d) weights checksum (\S+)", proc.stderr))
    assert set(sums) == {"0", "1"}, proc.stderr[-4000:]
    assert sums["0"] == sums["1"], f"ranks ended with different weights: {sums}"

    preds = pd.read_parquet(project.root / "results" / "predictions" / "e.parquet")
    test = preds[preds.role == "test"]
    counts = test.groupby(["image_id", "attribute"]).size()
    assert set(test.image_id) == set(toy_dataset.split_ids("scene", "test"))
    assert (counts == 1).all(), "each test image predicted exactly once after gathering"
    run_dir = project.root / "build" / "models" / "e" / "scene"
    assert (run_dir / "best.pt").is_file() and not (run_dir / "last.pt").exists()
    losses = [float(v) for v in re.findall(r"'train_loss': ([^,]+),", proc.stderr)]
    assert losses and all(0 < v < np.inf for v in losses), f"every epoch trained steps on both ranks: {losses}"
    assert "are skipped" not in proc.stderr, "no batch was smaller than the world"


def test_compile_traces_every_step_and_matches_eager(project, toy_dataset):
    """``train.compile`` with the tracing-only backend: dynamo captures the forward, results equal eager."""
    _copy_toy(project, toy_dataset)
    eager = parse_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {"epochs": 1}}))
    compiled = parse_params(toy_params(e={"dataset": "toy", "model": TINY, "train": {
        "epochs": 1, "compile": True, "compile_backend": "eager"}}))
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    b = train_experiment(compiled, "e", project.root, progress=False)
    assert counters["stats"]["unique_graphs"] >= 1, "torch.compile captured no graph"
    shutil.rmtree(project.root / "build" / "models")
    a = train_experiment(eager, "e", project.root, progress=False)
    np.testing.assert_allclose(a.pred.to_numpy(), b.pred.to_numpy(), rtol=1e-4, atol=1e-4)


def test_torchrun_refuses_a_run_whose_every_batch_is_skipped(project, toy_dataset):
    """No silent fallback: a run that would train no step at all stops with one line (on each rank) instead of
    writing the untrained weights as its model (it did, with train_loss 0.0 and exit status 0)."""
    _copy_toy(project, toy_dataset)
    # REQA at 8: one 5-image micro-batch per batch, which 2 ranks cannot share, so every batch is skipped
    proc = _torchrun_train(project, _smoke("reqa"), batch_size=8)
    assert proc.returncode != 0, proc.stderr[-2000:]
    refusals = re.findall(r"^iqalab train: error: (.*)$", proc.stderr, re.MULTILINE)
    assert refusals and set(refusals) == {
        "e/scene: every training batch holds fewer micro-batches of 5 than the 2 ranks (train.batch_size 8): no step "
        "would be trained; set train.batch_size to at least 10 or run fewer processes"}, proc.stderr[-4000:]
    assert len(refusals) == 2, "each rank refuses (torchrun then reports the failed children)"
    assert not list((project.root / "build" / "models").glob("e/**/*.pt")), "no model written"
