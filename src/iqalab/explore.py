"""What ``notebooks/00_explore.ipynb`` calls: browse a dataset, score one image with every trained model, view
gMAD pairs.

The notebook is the researcher's first look at the compendium, so every function here works on whatever the
pipeline has produced so far (the notebook ingests a dataset that is not built yet with
:func:`iqalab.stages.ingest.ensure`), :func:`trained_checkpoints` lists only the experiments that have a checkpoint, and :func:`load_gmad_pairs`
returns ``None`` before the gMAD stage has run. Figures follow :mod:`iqalab.plots` (paper page width, a
"simulated data" stamp on simulator images).

Scores come from :class:`iqalab.inference.Scorer` (the path ``iqalab score``, gMAD and the camera-tuning study
share), in the MOS units of each model's training dataset. A model trained on the browsed dataset has seen the
images of its training split: :func:`score_image` says which role (train/val/test) the image had there, so a
too-good score on a training image is not mistaken for generalisation.

The ipywidgets browsers (:func:`browser`, :func:`gmad_browser`) are optional decoration: they return ``None``
when ipywidgets is missing, and the notebook's plain cells, driven by its parameters, show the same views.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from iqalab.config import Params
from iqalab.data.cache import decode_image
from iqalab.data.schema import (
    CAM_COLUMNS,
    FACE_BOX,
    LANDMARKS,
    PERSON_BOX,
    Dataset,
    safe_relative_path,
)
from iqalab.inference import experiment_checkpoint
from iqalab.plots import PAGE_WIDTH_IN, label_simulated

log = logging.getLogger(__name__)

THUMB_PX = 160  # side of the thumbnails in the browsing grids


# ---------------------------------------------------------------------------------------------- dataset
def sortable_columns(ds: Dataset) -> dict[str, list[str]]:
    """The columns worth sorting by, grouped: ``mos`` (one per attribute), ``camera`` (camera parameters with at
    least two distinct known values) and ``other`` (remaining numeric columns that vary, e.g. a builder's
    distortion levels; sizes, boxes, std and vote counts left out)."""
    images = ds.images
    mos = [f"mos_{a}" for a in ds.attributes if f"mos_{a}" in images.columns]
    camera = [c for c in CAM_COLUMNS if c in images.columns and images[c].dropna().nunique() > 1]
    skip = {"width", "height", *mos, *CAM_COLUMNS, *PERSON_BOX, *FACE_BOX, *LANDMARKS}
    other = [c for c in images.columns
             if c not in skip and not c.startswith(("std_", "n_")) and pd.api.types.is_numeric_dtype(images[c])
             and images[c].dropna().nunique() > 1]
    return {"mos": mos, "camera": camera, "other": other}


def resolve_column(ds: Dataset, by: str | None) -> str:
    """The ``images`` column that ``by`` names: ``None`` = the first attribute's MOS; an attribute name
    (``"noise"``) = its ``mos_`` column; a camera parameter (``"iso"``) = its ``cam_`` column; else the column
    itself. Unknown names raise ``KeyError`` listing the choices."""
    columns = ds.images.columns
    if by is None:
        return f"mos_{ds.attributes[0]}"
    for candidate in (by, f"mos_{by}", f"cam_{by}"):
        if candidate in columns and pd.api.types.is_numeric_dtype(ds.images[candidate]):
            return candidate
    choices = sortable_columns(ds)
    raise KeyError(f"cannot sort {ds.name} by {by!r}; choose an attribute {ds.attributes}, a camera parameter "
                   f"{[c.removeprefix('cam_') for c in choices['camera']]} or a column {choices['other']}")


def ranked(ds: Dataset, by: str | None = None, ascending: bool = True, scene: str | None = None,
           condition: str | None = None) -> pd.DataFrame:
    """Images sorted by ``by`` (see :func:`resolve_column`; unknown values last), optionally only one scene or
    condition. Columns: ``image_id``, ``scene``, ``condition``, the sort column, every MOS and the varying
    camera parameters."""
    column = resolve_column(ds, by)
    table = ds.images
    if scene is not None:
        table = table[table["scene"].astype(str) == str(scene)]
    if condition is not None:
        table = table[table["condition"].astype(str) == str(condition)]
    groups = sortable_columns(ds)
    keep = list(dict.fromkeys(["image_id", "scene", "condition", column, *groups["mos"], *groups["camera"]]))
    return (table.sort_values(column, ascending=ascending, na_position="last", kind="mergesort")
            .loc[:, keep].reset_index(drop=True))


def spread(table: pd.DataFrame, column: str, n: int) -> pd.DataFrame:
    """Up to ``n`` rows of ``table`` (sorted by ``column``) evenly spaced from its lowest to highest known value."""
    known = table.dropna(subset=[column]).sort_values(column, kind="mergesort").reset_index(drop=True)
    if known.empty or n <= 0:
        return known.iloc[:0]
    picks = np.unique(np.linspace(0, len(known) - 1, num=min(n, len(known))).round().astype(int))
    return known.iloc[picks].reset_index(drop=True)


def load_image(ds: Dataset, image_id: str, size: int | None = THUMB_PX) -> np.ndarray:
    """Decode one image of ``ds`` (uint8 ``[H, W, 3]``, resized to ``size`` square when given)."""
    rows = ds.images.index[ds.images["image_id"].astype(str) == str(image_id)]
    if len(rows) == 0:
        raise KeyError(f"image {image_id!r} is not in dataset {ds.name}")
    row = int(rows[0])
    return decode_image(safe_relative_path(ds.root, str(ds.images.at[row, "path"]), row=row), size)


def _value_label(column: str, value: float) -> str:
    name = column.removeprefix("mos_").removeprefix("cam_")
    if column == "cam_shutter" and 0 < value < 1:
        return f"1/{1 / value:.0f} s"
    return f"{name} {value:.3g}"


def sorted_grid(ds: Dataset, by: Sequence[str | None] | str | None = None, n: int = 8,
                size: int = THUMB_PX) -> plt.Figure:
    """One row of ``n`` images per entry of ``by``, spread from the lowest to the highest value of that column
    (an attribute's MOS, a camera parameter, ...). Each thumbnail is titled with the row's value and, for rows
    that are not the first attribute, the first attribute's MOS."""
    columns = [resolve_column(ds, b) for b in ([by] if by is None or isinstance(by, str) else by)]
    main = f"mos_{ds.attributes[0]}"
    fig, axes = plt.subplots(len(columns), n, figsize=(PAGE_WIDTH_IN, len(columns) * (PAGE_WIDTH_IN / n + 0.35)),
                             squeeze=False)
    for r, column in enumerate(columns):
        picks = spread(ds.images, column, n)
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c >= len(picks):
                continue
            row = picks.iloc[c]
            ax.imshow(load_image(ds, str(row["image_id"]), size))
            title = _value_label(column, float(row[column]))
            if column != main and main in picks.columns and np.isfinite(row[main]):
                title += f"\n{ds.attributes[0]} {row[main]:.2f}"
            ax.set_title(title, fontsize=6)
        axes[r][0].text(-0.08, 0.5, column, transform=axes[r][0].transAxes, rotation=90, ha="right",
                        va="center", fontsize=7)
    fig.suptitle(f"{ds.name}: low to high", fontsize=9)
    fig.tight_layout()
    label_simulated(fig, bool(ds.meta.get("simulated")))
    return fig


def pick_image(ds: Dataset, image_id: str | None = None, by: str | None = None) -> str:
    """``image_id`` if given (checked), else the image at the median of ``by`` (default: first attribute)."""
    if image_id is not None:
        if str(image_id) not in set(ds.images["image_id"].astype(str)):
            raise KeyError(f"image {image_id!r} is not in dataset {ds.name}")
        return str(image_id)
    known = spread(ds.images, resolve_column(ds, by), len(ds.images))
    return str(known.iloc[(len(known) - 1) // 2]["image_id"])


# ----------------------------------------------------------------------------------------------- models
def trained_checkpoints(params: Params, root: Path) -> dict[str, Path]:
    """Experiment -> ``build/models/<e>/<first split>/best.pt`` for every experiment of ``params`` whose
    ``results/predictions/<e>.json`` lists splits and whose checkpoint exists (not trained yet: left out)."""
    found: dict[str, Path] = {}
    for name in params.experiments:
        path, why = experiment_checkpoint(root, name)
        if path is not None:
            found[name] = path
        elif "checkpoint" in why:
            log.info("experiment %s has predictions but no checkpoint: %s", name, why)
    return found


def _row_array(images: pd.DataFrame, row: int, columns: Sequence[str]) -> np.ndarray | None:
    if not set(columns) <= set(images.columns):
        return None
    return images.loc[[row], list(columns)].to_numpy(dtype=np.float64)


def _trained_on(experiment: str, checkpoint: Path, params: Params | None) -> str:
    """The dataset ``experiment`` was trained on: from ``params``, else from its predictions JSON
    (``<root>/results/predictions/<e>.json``, the checkpoint being ``<root>/build/models/<e>/<split>/best.pt``)."""
    if params is not None and experiment in params.experiments:
        return params.experiments[experiment].dataset
    meta = Path(checkpoint).parents[3] / "results" / "predictions" / f"{experiment}.json"
    return str(json.loads(meta.read_text()).get("dataset", "?")) if meta.is_file() else "?"


def score_image(ds: Dataset, image_id: str, checkpoints: dict[str, Path], params: Params | None = None,
                device: str = "cpu") -> pd.DataFrame:
    """Every checkpoint's scores of one image of ``ds``, one row per experiment and attribute it predicts.

    Columns: ``experiment``, ``label`` (from ``params`` when given), ``model``, ``trained_on``, ``attribute``,
    ``score`` (in the MOS units of the model's training set), ``score_norm`` (the same on [0, 1]: 0 and 1 are
    the ends of that MOS range), ``mos`` and ``mos_norm`` (this image's MOS of that attribute, native and on
    [0, 1], NaN when ``ds`` has no such attribute), ``role`` (the image's role in the checkpoint's split when
    the model was trained on ``ds``, else ``unseen``). Camera parameters, boxes and landmarks of the image are
    passed to the model as the training loader did.
    """
    from iqalab.inference import Scorer

    rows = ds.images.index[ds.images["image_id"].astype(str) == str(image_id)]
    if len(rows) == 0:
        raise KeyError(f"image {image_id!r} is not in dataset {ds.name}")
    row = int(rows[0])
    image = load_image(ds, image_id, size=None)
    cam = _row_array(ds.images, row, CAM_COLUMNS)
    landmarks = _row_array(ds.images, row, LANDMARKS)
    records: list[dict[str, Any]] = []
    for name, path in checkpoints.items():
        scorer = Scorer(path, device)
        scores = scorer.score([image], cam=cam, person_boxes=_row_array(ds.images, row, PERSON_BOX),
                              face_boxes=_row_array(ds.images, row, FACE_BOX),
                              landmarks=None if landmarks is None else landmarks.reshape(1, 5, 2))
        trained_on = _trained_on(name, path, params)
        role = "unseen"
        if trained_on == ds.name:
            split = str(scorer.config.get("split", path.parent.name))
            hit = ds.splits[(ds.splits["split"] == split) & (ds.splits["image_id"].astype(str) == str(image_id))]
            role = str(hit["role"].iloc[0]) if len(hit) else "unused"
        lo, hi = ds.mos_range
        for attr, values in scores.items():
            mos_col = f"mos_{attr}"
            mos = float(ds.images.at[row, mos_col]) if mos_col in ds.images.columns else np.nan
            records.append({"experiment": name,
                            "label": (params.experiments[name].label or name) if params else name,
                            "model": scorer.name, "trained_on": trained_on, "attribute": attr,
                            "score": float(values[0]), "score_norm": (float(values[0]) - scorer.lo)
                            / (scorer.hi - scorer.lo), "mos": mos, "mos_norm": (mos - lo) / (hi - lo),
                            "role": role})
    columns = ["experiment", "label", "model", "trained_on", "attribute", "score", "score_norm", "mos", "mos_norm",
               "role"]
    return pd.DataFrame.from_records(records, columns=columns)


def scores_figure(ds: Dataset, image_id: str, scores: pd.DataFrame, attribute: str | None = None) -> plt.Figure:
    """The image next to a bar per model of its ``attribute`` score (default: the first attribute of ``ds``
    that some model predicts), with the image's MOS as a vertical line when known. Models trained on datasets
    with other MOS ranges are comparable only after normalisation, so the axis is ``score_norm`` (0 = the low
    end of each model's training range, 1 = the high end)."""
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.6),
                                         gridspec_kw={"width_ratios": [1, 1.6]})
    ax_img.imshow(load_image(ds, image_id, size=None))
    ax_img.axis("off")
    ax_img.set_title(image_id, fontsize=8)
    if attribute is None:
        predicted = list(dict.fromkeys(scores["attribute"])) if len(scores) else []
        attribute = next((a for a in ds.attributes if a in predicted), predicted[0] if predicted else None)
    part = scores[scores["attribute"] == attribute] if attribute is not None else scores.iloc[:0]
    if part.empty:
        reason = "no trained model yet (run dvc repro)" if scores.empty else f"no model predicts {attribute!r}"
        ax_bar.text(0.5, 0.5, reason, ha="center", va="center",
                    fontsize=8, transform=ax_bar.transAxes)
        ax_bar.axis("off")
    else:
        labels = [f"{lab} ({role})" for lab, role in zip(part["label"], part["role"])]
        ax_bar.barh(labels, part["score_norm"], color="0.55")
        for k, (norm, raw) in enumerate(zip(part["score_norm"], part["score"])):
            ax_bar.text(max(float(norm), 0.0) + 0.01, k, f"{raw:.3g}", va="center", fontsize=6)
        known = part.dropna(subset=["mos_norm"])
        if len(known):
            ax_bar.axvline(float(known["mos_norm"].iloc[0]), color="C3", lw=1.2,
                           label=f"MOS {float(known['mos'].iloc[0]):.2f}")
            ax_bar.legend(fontsize=7, loc="lower right")
        ax_bar.set_xlim(min(0.0, float(part["score_norm"].min())), max(1.1, float(part["score_norm"].max()) + 0.1))
        ax_bar.set_xlabel(f"predicted {attribute}, normalised to each model's MOS range (value: raw score)",
                          fontsize=7)
        ax_bar.tick_params(labelsize=7)
    fig.tight_layout()
    label_simulated(fig, bool(ds.meta.get("simulated")))
    return fig


# ------------------------------------------------------------------------------------------------- gMAD
def load_gmad_pairs(root: Path) -> pd.DataFrame | None:
    """``results/gmad/pairs.csv`` of the gMAD stage, or ``None`` when it does not exist or holds no pair."""
    path = Path(root) / "results" / "gmad" / "pairs.csv"
    if not path.is_file():
        return None
    pairs = pd.read_csv(path)
    return pairs if len(pairs) else None


def gmad_model_pairs(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    """The unordered (model x, model y) couples that compete in ``pairs``, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for attacker, defender in zip(pairs["attacker"].astype(str), pairs["defender"].astype(str)):
        seen.setdefault(tuple(sorted((attacker, defender))), None)  # type: ignore[arg-type]
    return list(seen)


def gmad_figure(pairs: pd.DataFrame, root: Path, model_x: str | None = None, model_y: str | None = None,
                size: int = 128) -> plt.Figure:
    """The gMAD pair grid (:func:`iqalab.analysis.gmad.pair_grid`) of one model couple (default: the first), images read
    from the pool files named in ``pairs.csv`` (``path_a`` / ``path_b``, relative to ``root``)."""
    from iqalab.analysis import gmad

    couples = gmad_model_pairs(pairs)
    if model_x is None or model_y is None:
        model_x, model_y = couples[0]
    paths: dict[str, str] = {}
    for key in ("a", "b"):
        paths.update(zip(pairs[f"image_{key}"].astype(str), pairs[f"path_{key}"].astype(str)))

    def load(image_id: str) -> np.ndarray:
        path = Path(paths[image_id])
        return decode_image(path if path.is_absolute() else Path(root) / path, size)

    fig = gmad.pair_grid(pairs, model_x, model_y, load)
    label_simulated(fig, True)  # the gMAD pool is always simulator renders (iqalab.sim.pools)
    return fig


# ---------------------------------------------------------------------------------------------- widgets
def _widgets() -> Any:
    try:
        import ipywidgets
    except ImportError:
        log.info("ipywidgets is not installed: interactive browsers skipped (the plain cells show the same)")
        return None
    return ipywidgets


def browser(ds: Dataset, n: int = 8) -> Any:
    """An ipywidgets browser of ``ds``: choose the sort column (attribute, camera parameter, other) and a scene;
    shows :func:`sorted_grid`. ``None`` when ipywidgets is not installed."""
    widgets = _widgets()
    if widgets is None:
        return None
    groups = sortable_columns(ds)
    options = [*groups["mos"], *groups["camera"], *groups["other"]]
    scenes = ["(all)", *ds.scenes]

    def show(by: str, scene: str) -> None:
        part = ds if scene == "(all)" else Dataset(root=ds.root, meta=ds.meta, splits=ds.splits,
                                                    images=ds.images[ds.images["scene"].astype(str) == scene]
                                                    .reset_index(drop=True))
        sorted_grid(part, by, n=n)
        plt.show()

    return widgets.interactive(show, by=widgets.Dropdown(options=options, value=options[0], description="sort by"),
                               scene=widgets.Dropdown(options=scenes, value="(all)", description="scene"))


def image_browser(ds: Dataset, checkpoints: dict[str, Path], params: Params | None = None, device: str = "cpu",
                  by: str | None = None, n: int = 8) -> Any:
    """An ipywidgets view of one image scored by the trained models: choose the image (``n`` images spread over
    ``by``, lowest first, each labelled with its value), the attribute and the models shown; draws
    :func:`scores_figure`. Each image is scored once (kept while the widget lives). ``None`` without
    ipywidgets."""
    widgets = _widgets()
    if widgets is None:
        return None
    column = resolve_column(ds, by)
    shown = spread(ds.images, column, n)
    images = [(f"{row.image_id} ({_value_label(column, float(getattr(row, column)))})", str(row.image_id))
              for row in shown.itertuples(index=False)]
    models = list(checkpoints) or ["(none trained)"]
    scored: dict[str, pd.DataFrame] = {}

    def show(image_id: str, attribute: str, experiments: tuple[str, ...]) -> None:
        if image_id not in scored:
            scored[image_id] = score_image(ds, image_id, checkpoints, params, device)
        scores = scored[image_id]
        scores_figure(ds, image_id, scores[scores["experiment"].isin(experiments)], attribute)
        plt.show()

    return widgets.interactive(
        show, image_id=widgets.Dropdown(options=images, value=images[len(images) // 2][1], description="image"),
        attribute=widgets.Dropdown(options=list(ds.attributes), description="attribute"),
        experiments=widgets.SelectMultiple(options=models, value=tuple(models), rows=min(len(models), 6),
                                           description="models"))


def gmad_browser(pairs: pd.DataFrame, root: Path) -> Any:
    """An ipywidgets chooser of the gMAD model couple, showing :func:`gmad_figure`; ``None`` without
    ipywidgets."""
    widgets = _widgets()
    if widgets is None:
        return None
    couples = {f"{x} vs {y}": (x, y) for x, y in gmad_model_pairs(pairs)}

    def show(couple: str) -> None:
        gmad_figure(pairs, root, *couples[couple])
        plt.show()

    return widgets.interactive(show, couple=widgets.Dropdown(options=list(couples), description="models"))
