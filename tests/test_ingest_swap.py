"""A re-ingest killed between its two renames (``stages/ingest.py``: ``build/datasets/<ds>`` -> ``.<ds>.old``, then
``.<ds>.partial`` -> ``build/datasets/<ds>``), on the toy data.

The kill leaves the previous dataset whole in ``.toy.old`` and the complete rebuild whole in ``.toy.partial``, with
no ``build/datasets/toy``. This test builds that state by hand (the renames the code makes, stopped between the two)
and checks what a reader sees and what the next ingest does: it neither completes nor undoes the swap, but deletes
both folders and ingests again (``docs/reliability.md``, "Re-ingest killed while swapping folders").
"""

from __future__ import annotations

import logging
import shutil

import pytest

from iqalab.data.schema import DataError, read_dataset
from iqalab.io import sha256_file

from .conftest import toy_params


def _snapshot(folder):  # noqa: ANN001, ANN202
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_between_the_two_renames_then_next_ingest_rebuilds(project, monkeypatch, caplog) -> None:
    from iqalab.stages import ingest

    params = project.write_params(toy_params())
    first = ingest.run(params, "toy", project.root, progress=False)
    final = project.root / "build" / "datasets" / "toy"
    retired, staging = final.with_name(".toy.old"), final.with_name(".toy.partial")
    before = _snapshot(final)

    # the state a SIGKILL between `final.rename(retired)` and `staging.rename(final)` leaves: both folders whole
    final.rename(retired)
    shutil.copytree(retired, staging)  # a complete staged rebuild (the same options and seed give the same content)
    (retired / "OLD_MARKER").write_text("the previous dataset")
    (staging / "NEW_MARKER").write_text("the complete rebuild")
    assert read_dataset(staging, check_files=True).meta["checksums"] == first.meta["checksums"]
    with pytest.raises(DataError, match=r"dataset folder not found: .*run the ingest stage first"):
        read_dataset(final)

    built = []
    real_produce = ingest.produce

    def counting_produce(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        built.append(args[2])
        return real_produce(*args, **kwargs)

    monkeypatch.setattr(ingest, "produce", counting_produce)
    with caplog.at_level(logging.INFO, logger="iqalab.stages.ingest"):
        again = ingest.run(params, "toy", project.root, progress=False)

    # neither folder is swapped in: the staged rebuild is deleted, the dataset produced again, the old one deleted
    assert "removing the partial output of an interrupted ingest" in caplog.text
    assert built == [staging], "the next ingest rebuilds from the source"
    assert not retired.exists() and not staging.exists()
    assert not (final / "NEW_MARKER").exists() and not (final / "OLD_MARKER").exists()
    assert _snapshot(final) == before, "the rebuild equals the uninterrupted ingest file for file"
    assert again.meta["checksums"] == first.meta["checksums"]
    read_dataset(final, check_files=True)
