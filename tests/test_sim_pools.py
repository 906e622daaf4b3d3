"""Simulator pools cached on disk (gMAD, camera tuning) are reused only by the simulator that rendered them."""

from __future__ import annotations

import json

import pytest

from iqalab.sim import pools


@pytest.fixture(autouse=True)
def _fresh_fingerprint():
    pools.simulator_fingerprint.cache_clear()
    yield
    pools.simulator_fingerprint.cache_clear()


def test_pool_is_rerendered_when_the_simulator_source_changes(tmp_path, monkeypatch):
    first = pools.render_pool(tmp_path, n_scenes=1, renders_per_scene=2, image_size=64, kind="livestream", seed=0,
                              progress=False)
    spec = json.loads((tmp_path / "pool.json").read_text())["spec"]
    assert spec["simulator"] == pools.simulator_fingerprint() == first.spec["simulator"]
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.jpg")}
    again = pools.render_pool(tmp_path, n_scenes=1, renders_per_scene=2, image_size=64, kind="livestream", seed=0,
                              progress=False)
    assert again.spec == first.spec
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.jpg")} == stamp  # reused, not redrawn
    monkeypatch.setattr(pools, "simulator_fingerprint", lambda: "another-renderer")
    changed = pools.render_pool(tmp_path, n_scenes=1, renders_per_scene=2, image_size=64, kind="livestream", seed=0,
                                progress=False)
    assert changed.spec["simulator"] == "another-renderer"
    assert json.loads((tmp_path / "pool.json").read_text())["spec"]["simulator"] == "another-renderer"


@pytest.mark.parametrize("source", ["camera.py", "kernels.py", "scenes.py"])
def test_fingerprint_follows_the_renderer_source(tmp_path, monkeypatch, source):
    from iqalab.analysis.tuning import simulator_fingerprint as tuning_fingerprint

    assert tuning_fingerprint() == pools.simulator_fingerprint()  # the tuning renders use the same key
    real = pools.Path

    class Shifted(type(real())):  # the same package, with one source read as one byte longer
        def read_bytes(self):  # noqa: D102
            data = super().read_bytes()
            return data + b" " if self.name == source else data

    before = pools.simulator_fingerprint()
    pools.simulator_fingerprint.cache_clear()
    monkeypatch.setattr(pools, "Path", Shifted)
    assert pools.simulator_fingerprint() != before


def test_fingerprint_follows_the_numeric_kernels(monkeypatch):
    """Renders cached under other numpy / OpenBLAS kernels (another CPU, or IQALAB_NUMERICS=native) are not
    reused: their float32 roundings differ."""
    from iqalab import numerics

    before = pools.simulator_fingerprint()
    pools.simulator_fingerprint.cache_clear()
    monkeypatch.setattr(numerics, "label", lambda: "numpy X86_V4, OpenBLAS SkylakeX")
    assert pools.simulator_fingerprint() != before
