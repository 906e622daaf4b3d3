"""Stage ``ingest``: build one dataset's canonical tables and image cache under ``build/datasets/<name>/``.

The source is the built-in simulator (``source: sim``, the default, offline), a real dataset read by an adapter
from ``data/raw/<name>/`` (``source: adapter``), or the tiny toy set (``source: toy``, tests and CI). The output
folder is rebuilt in a temporary sibling and swapped in only when complete, so an interrupted ingest never leaves a
folder that looks finished. With ``datasets.<name>.detect.enabled`` the images without person/face regions are
searched by :func:`iqalab.data.regions.fill_regions` (cached by image content under ``build/detections/``) before
the image cache is built.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from iqalab.config import Params, ParamsError
from iqalab.data.cache import build_cache
from iqalab.data.regions import fill_regions
from iqalab.data.schema import DataError, Dataset, read_dataset
from iqalab.io import project_root, write_json

log = logging.getLogger(__name__)


def raw_folder(params: Params, name: str) -> Path:
    """The raw folder of adapter dataset ``name``: ``datasets.<name>.raw`` (default ``data/raw/<name>``) resolved
    against the project root, as documented, whatever the work folder (``$IQALAB_WORKDIR`` moves only ``build/``
    and ``results/``); an absolute path is taken as it is."""
    return project_root() / (params.dataset(name).raw or f"data/raw/{name}")


def produce(params: Params, name: str, out: Path, root: Path) -> Dataset:
    """Write dataset ``name`` into ``out`` with the configured source.

    An option value the simulator builder or the toy generator refuses (a negative size, a string where a number
    goes) is a :class:`~iqalab.config.ParamsError` naming ``datasets.<name>.options``, not a traceback."""
    cfg = params.dataset(name)
    if cfg.source in ("toy", "sim"):
        try:
            if cfg.source == "toy":
                from iqalab.data.toy import build_toy

                return build_toy(out, seed=params.seed, **cfg.options)
            from iqalab.sim.builders import build

            return build(cfg.builder, out, seed=params.seed, **cfg.options)
        except DataError:
            raise
        except (TypeError, ValueError) as exc:
            what = "the toy generator" if cfg.source == "toy" else f"simulator builder {cfg.builder!r}"
            raise ParamsError(f"datasets.{name}.options: {what} refuses {cfg.options}: {exc}") from exc
    from iqalab.data.adapters import CARDS, adapt, resolve
    from iqalab.data.adapters.base import layout_error

    raw = raw_folder(params, name)
    if not raw.is_dir():
        raise DataError(f"datasets.{name}.raw: {layout_error(CARDS[resolve(cfg.builder)], raw, [])}")
    return adapt(cfg.builder, raw, out, **cfg.options)


def run(params: Params, name: str, root: Path, progress: bool = True) -> Dataset:
    """Build dataset ``name`` and its cache; replace ``build/datasets/<name>`` only when both are complete."""
    cfg = params.dataset(name)
    final = root / "build" / "datasets" / name
    staging = final.with_name(f".{name}.partial")
    if staging.exists():
        log.info("removing the partial output of an interrupted ingest: %s", staging)
        shutil.rmtree(staging)
    produce(params, name, staging, root)
    meta_path = staging / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["name"] = name  # the params key names the dataset, whatever the builder called it
    write_json(meta_path, meta)
    ds = read_dataset(staging, check_files=True)
    if cfg.detect.enabled:  # person/face boxes + landmarks for images without them, cached by image content
        ds = fill_regions(ds, cfg.detect, root / "build" / "detections" / name, root=root, progress=progress)
    build_cache(ds, cfg.cache_size, progress=progress, max_side=cfg.max_side)
    retired = final.with_name(f".{name}.old")
    if retired.exists():
        shutil.rmtree(retired)
    if final.exists():  # two renames: a kill leaves either the old or the new folder whole, never half-deleted
        final.rename(retired)
    staging.rename(final)
    if retired.exists():
        shutil.rmtree(retired)
    log.info("ingested %s: %d images", name, len(ds.images))
    return read_dataset(final)


def ensure(params: Params, name: str, root: Path, progress: bool = False) -> Dataset:
    """Dataset ``name`` from ``build/datasets/<name>``, ingested first when it is not built yet (the explore
    notebook runs before the ingest stage in CI and on a fresh clone)."""
    folder = Path(root) / "build" / "datasets" / name
    if not (folder / "dataset.json").is_file():
        log.info("dataset %s is not built yet: running the ingest stage into %s", name, folder)
        return run(params, name, Path(root), progress=progress)
    return read_dataset(folder)
