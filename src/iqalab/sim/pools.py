"""Unlabelled image pools that trained models compete or tune on: simulator renders of held-out scenes, or a
user's folder of images. Shared by gMAD (:mod:`iqalab.stages.gmad`) and the camera-tuning study
(:mod:`iqalab.stages.camera_tuning`).

- :func:`pool_setup`: scene-pool kind, ground-truth panel profile and render size for a dataset (from its
  simulator builder, :data:`BUILDER_POOLS`), unless the stage's settings name them;
- :func:`render_pool`: ``n_scenes x renders_per_scene`` renders of :func:`iqalab.sim.builders.scene_pool` scenes
  under the camera settings ``fglive_sim`` draws (TuningIQA Sec. 3: an auto-exposure reference plus deviations of
  1-3 of the 7 parameters, half of them fine steps), cached on disk with the settings that made them;
- :func:`folder_pool`: a folder of images (no ground truth) as a :class:`Pool`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iqalab.data.cache import decode_image
from iqalab.data.schema import CAM_COLUMNS, FACE_BOX, LANDMARKS, PERSON_BOX
from iqalab.io import expand_images, write_bytes, write_json, write_parquet

if TYPE_CHECKING:
    from iqalab.config import DatasetConfig

log = logging.getLogger(__name__)

#: simulator builder -> (held-out scene-pool kind, ground-truth panel profile); other datasets use livestream
BUILDER_POOLS: dict[str, tuple[str, str]] = {
    "fglive_sim": ("livestream", "livestream"), "portrait_sim": ("portrait", "portrait"),
    "face_sim": ("face", "surveillance"), "ugc_sim": ("ugc", "ugc"),
}
POOL_VERSION = 2  # bump when the rendering or scene recipe changes, so cached pools are re-rendered
#                  (2: issue #23 content: LFW faces, skin tones, head roll, scales, HDR share)


@functools.lru_cache(maxsize=1)
def simulator_fingerprint() -> str:
    """Short hash of the simulator's source that decides what a render looks like (scenes, camera, builders).

    Part of the key of every render cached on disk in a folder that persists between pipeline runs (the gMAD
    pool, the camera-tuning renders): a cache made by an older simulator is never reused, so a fresh clone's run
    and a rerun in place render the same images (issue 28: ``make verify`` found committed gMAD results made from
    a pool rendered before the renderer changed).

    The files are those a render runs (scenes and their face geometry, camera, its compiled loops, builders), and
    the numeric kernels of this process (:func:`iqalab.numerics.label`): numpy's and OpenBLAS's kernels round
    differently on different instruction sets, so a cache rendered under others is not reused (renders kept from
    before portable numerics made the committed gMAD and tuning results differ from a rerun's, 2026-12-03)."""
    from iqalab import numerics

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("scenes.py", "lfw_geometry.py", "camera.py", "kernels.py", "builders.py"):
        digest.update(name.encode() + b"\0" + (package / name).read_bytes() + b"\0")
    digest.update(numerics.label().encode())
    return digest.hexdigest()[:12]


def pool_setup(dataset: DatasetConfig | None, kind: str | None = None, profile: str | None = None,
               image_size: int | None = None) -> tuple[str, str, int]:
    """(scene-pool kind, panel profile, render size) for a dataset's models, each unless given.

    Kind and profile follow the dataset's simulator builder (:data:`BUILDER_POOLS`, livestream otherwise); the
    size is the dataset's ``options.image_size`` (or ``options.size``), else its builder's default
    ``image_size`` (simulated datasets), else its ``cache_size``, else 256.
    """
    builder = dataset.builder if dataset is not None else ""
    default_kind, default_profile = BUILDER_POOLS.get(builder or "", ("livestream", "livestream"))
    size = image_size
    if size is None and dataset is not None:
        size = dataset.options.get("image_size") or dataset.options.get("size")
        if size is None and dataset.source == "sim":
            from iqalab.sim.builders import builder_options

            size = builder_options(builder).get("image_size")
        size = size or dataset.cache_size
    return kind or default_kind, profile or default_profile, int(size or 256)


@dataclass
class Pool:
    """The unlabelled images the models compete on: ``table`` has ``image_id`` and an absolute ``path`` per
    image, and for simulator pools the camera columns, boxes, landmarks and the render ``info`` (``sim_*``)."""

    table: pd.DataFrame
    folder: Path
    simulated: bool
    spec: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        """The image ids, in table order."""
        return self.table["image_id"].astype(str).tolist()

    def image(self, i: int, size: int | None = None) -> np.ndarray:
        """Image ``i`` decoded (HxWx3 uint8), resized to fit ``size`` when given."""
        return decode_image(self.table["path"].iloc[i], size)

    def columns(self, names: tuple[str, ...]) -> np.ndarray | None:
        """``[N, len(names)]`` floats, or None when the pool does not know them."""
        if not set(names) <= set(self.table.columns):
            return None
        return self.table[list(names)].to_numpy(dtype=np.float64)

    def infos(self) -> list[dict[str, float]]:
        """The render ``info`` of every image (simulator pools)."""
        cols = [c for c in self.table.columns if c.startswith("sim_")]
        return [{c.removeprefix("sim_"): v for c, v in row.items()}
                for row in self.table[cols].to_dict(orient="records")]


def render_pool(folder: Path, n_scenes: int, renders_per_scene: int, image_size: int, kind: str, seed: int,
                progress: bool = True) -> Pool:
    """Render (or reuse from ``folder``) ``n_scenes x renders_per_scene`` simulator images of held-out scenes.

    Camera settings follow ``fglive_sim``: per scene an auto-exposure reference (aperture f/2, 2.8 or 4,
    sharpening 0.6, JPEG 92) and ``renders_per_scene - 1`` deviations of 1-3 of the 7 parameters, fine or
    coarse with equal odds (:func:`iqalab.sim.builders._deviate`). The pool is reused when ``pool.json`` records
    the same settings and the same simulator source (:func:`simulator_fingerprint`).
    """
    from iqalab.sim.builders import _box_columns, _deviate, scene_pool
    from iqalab.sim.camera import auto_params, capture

    spec = {"version": POOL_VERSION, "kind": kind, "n_scenes": n_scenes, "renders_per_scene": renders_per_scene,
            "image_size": image_size, "seed": seed, "simulator": simulator_fingerprint()}
    meta_path, table_path = folder / "pool.json", folder / "pool.parquet"
    if meta_path.is_file() and table_path.is_file():
        if json.loads(meta_path.read_text()).get("spec") == spec:
            table = pd.read_parquet(table_path)
            table["path"] = [str(folder / p) for p in table["path"]]
            if all(Path(p).is_file() for p in table["path"]):
                log.info("pool: reusing %s (%d images)", folder, len(table))
                return Pool(table=table, folder=folder, simulated=True, spec=spec)
    meta_path.unlink(missing_ok=True)
    images_dir = folder / "images"
    if images_dir.is_dir():
        for old in images_dir.glob("*.jpg"):
            old.unlink()
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), zlib.crc32(f"gmad_pool/{kind}".encode())])
    scenes = scene_pool(n_scenes, seed=seed, image_size=image_size, kind=kind)
    rows = []
    bar = tqdm(total=n_scenes * renders_per_scene, desc="pool renders", disable=not progress, mininterval=2.0)
    for scene in scenes:
        ref = auto_params(scene, aperture=float(rng.choice([2.0, 2.8, 4.0])), sharpness=0.6, jpeg_quality=92)
        settings = [ref] + [_deviate(ref, rng, int(rng.choice([1, 1, 2, 3])), fine=bool(rng.random() < 0.5))
                            for _ in range(renders_per_scene - 1)]
        for k, cam in enumerate(settings):
            image_id = f"{scene.name}_{k:03d}"
            shot = capture(scene, cam, rng)
            rel = f"images/{image_id}.jpg"
            write_bytes(folder / rel, shot.jpeg)
            row: dict[str, Any] = {"image_id": image_id, "path": rel, "scene": scene.name,
                                   "condition": scene.condition}
            row.update(cam.cam_columns())
            row.update(_box_columns(scene, with_person=kind != "face"))
            row.update({f"sim_{key}": float(value) for key, value in shot.info.items()})
            rows.append(row)
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows)
    write_parquet(table_path, table)
    write_json(meta_path, {"spec": spec, "n_images": len(table)})
    table["path"] = [str(folder / p) for p in table["path"]]
    log.info("pool: rendered %d images (%s, %d px) into %s", len(table), kind, image_size, folder)
    return Pool(table=table, folder=folder, simulated=True, spec=spec)


def folder_pool(folder: Path) -> Pool:
    """A user's folder of images (recursive) as the pool; ids are the relative paths with ``/`` as ``__``."""
    files = expand_images([folder])
    ids = [str(p.relative_to(folder).with_suffix("")).replace("/", "__") for p in files]
    table = pd.DataFrame({"image_id": ids, "path": [str(p) for p in files]})
    return Pool(table=table, folder=folder, simulated=False, spec={"image_folder": str(folder)})


def score_pool(pool: Pool, checkpoints: Mapping[str, Path], attribute: str, batch_size: int = 16,
               device: str = "auto", progress: bool = True, what: str = "attribute") -> dict[str, np.ndarray]:
    """Every checkpoint's ``attribute`` score on every pool image (MOS units of its own training set), with the
    pool's camera parameters, person and face boxes and landmarks passed on (:class:`iqalab.inference.Scorer`).
    A checkpoint that does not predict ``attribute`` is a ``ValueError`` naming ``what`` (the setting's key)."""
    from iqalab.inference import Scorer

    cam = pool.columns(CAM_COLUMNS)
    person, face = pool.columns(PERSON_BOX), pool.columns(FACE_BOX)
    landmarks = pool.columns(LANDMARKS)
    landmarks = landmarks.reshape(-1, 5, 2) if landmarks is not None else None
    scores: dict[str, np.ndarray] = {}
    for name, ckpt in checkpoints.items():
        scorer = Scorer(ckpt, device)
        if attribute not in scorer.attributes:
            raise ValueError(f"{what}: experiment {name!r} does not predict {attribute!r} "
                             f"(it predicts {scorer.attributes})")
        values = np.empty(len(pool), dtype=np.float64)
        for start in tqdm(range(0, len(pool), batch_size), desc=f"score {name}", disable=not progress,
                          mininterval=2.0):
            idx = slice(start, min(len(pool), start + batch_size))
            images = [pool.image(i) for i in range(idx.start, idx.stop)]

            def part(arr: np.ndarray | None, idx: slice = idx) -> np.ndarray | None:
                return None if arr is None else arr[idx]

            values[idx] = scorer.score(images, cam=part(cam), person_boxes=part(person), face_boxes=part(face),
                                       landmarks=part(landmarks), batch_size=batch_size)[attribute]
        scores[name] = values
    return scores
