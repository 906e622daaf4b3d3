"""``iqalab weights``: which pretrained backbones a params profile needs, what the hub cache holds, and a fetch
that fails fast offline (no test touches the internet)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from iqalab import weights as W
from tests.conftest import toy_params

TUNING = {"name": "tuningiqa", "backbone": "mobilenetv3_small_100", "human_backbone": "mobilenetv3_small_050",
          "hfe_dim": 8, "embed_dim": 16, "gcpf_dim": 8, "head_hidden": 8}


def test_needed_backbones_follow_what_each_model_builds(project) -> None:  # noqa: ANN001
    params = project.write_params(toy_params(
        mlp={"dataset": "toy", "model": {"name": "backbone_mlp", "backbone": "resnet18", "pretrained": True}},
        no_hfe={"dataset": "toy", "model": {**TUNING, "pretrained": True, "use_hfe": False}},
        hfe={"dataset": "toy", "model": {**TUNING, "pretrained": True, "use_hfe": True}},
        scratch={"dataset": "toy", "model": {"name": "backbone_mlp", "backbone": "vgg11", "pretrained": False}},
        local={"dataset": "toy", "model": {"name": "backbone_mlp", "backbone": "vgg13",
                                           "pretrained": "/weights/vgg13.pth"}},
    ))
    needed = W.needed_backbones(params)
    # the human backbone only where use_hfe builds it; no entry for pretrained: false or a local file
    assert needed == {"resnet18": ["mlp"], "mobilenetv3_small_100": ["hfe", "no_hfe"],
                      "mobilenetv3_small_050": ["hfe"]}
    assert W.hub_repo("resnet18") == "timm/resnet18.a1_in1k"


def test_status_on_empty_and_filled_cache(tmp_path: Path) -> None:
    needed = {"resnet18": ["mlp"], "mobilenetv3_small_050": ["hfe"]}
    rows = W.weights_status(needed, cache_dir=tmp_path)
    assert [(r.backbone, r.cached) for r in rows] == [("resnet18", None), ("mobilenetv3_small_050", None)]
    text = W.status_text(rows, cache_dir=tmp_path)
    assert "resnet18" in text and "MISSING  (for mlp)" in text and "0 timm repositories cached" in text
    # a cache laid out as huggingface_hub writes it: refs/main -> snapshots/<commit>/model.safetensors
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "blobs").mkdir()
    (repo / "blobs" / "deadbeef").write_bytes(b"w" * 1000)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").symlink_to(repo / "blobs" / "deadbeef")
    rows = W.weights_status(needed, cache_dir=tmp_path)
    assert rows[0].cached == repo / "snapshots" / "abc123" / "model.safetensors" and rows[1].cached is None
    assert W.cache_listing(tmp_path) == [("timm/resnet18.a1_in1k", 1000)]
    assert W.fetch_weights(["resnet18"], cache_dir=tmp_path) == [rows[0].cached]  # cached: no network needed


def test_fetch_fails_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(W.WeightsUnavailable, match=r"127.0.0.1:9\) is unreachable.*resnet18"):
        W.fetch_weights(["resnet18"], cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


def _fake_download(cache: Path, repo: str) -> Path:
    """What a hub download leaves: refs/main -> snapshots/<commit>/model.safetensors."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("c0ffee")
    (folder / "snapshots" / "c0ffee").mkdir(parents=True)
    target = folder / "snapshots" / "c0ffee" / "model.safetensors"
    target.write_bytes(b"w")
    return target


def test_fetch_lifts_offline_mode_for_the_download_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(W, "_reachable", lambda timeout=3.0: True)
    calls = []

    def create_model(name: str, pretrained: bool = False, **kwargs: object) -> None:
        calls.append((name, pretrained, constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")))
        _fake_download(tmp_path, W.hub_repo(name))

    monkeypatch.setattr(timm, "create_model", create_model)
    files = W.fetch_weights(["resnet18", "mobilenetv3_small_050"], cache_dir=tmp_path)
    assert calls == [("resnet18", True, False, None), ("mobilenetv3_small_050", True, False, None)]
    assert files == [tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "c0ffee" / "model.safetensors",
                     tmp_path / "models--timm--mobilenetv3_small_050.lamb_in1k" / "snapshots" / "c0ffee"
                     / "model.safetensors"]
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"  # restored for the job
    calls.clear()
    W.fetch_weights(["resnet18"], cache_dir=tmp_path)
    assert calls == []  # cached: nothing downloaded again
