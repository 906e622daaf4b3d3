"""Stage ``significance``: which differences between models are statistically real (REQA Sec. IV-C-2).

Reads only ``results/predictions/<experiment>.{parquet,json}`` of the experiments in ``params.yaml`` (through
:func:`iqalab.analysis.evaluation.load_predictions`) and writes under ``results/significance/``, per test dataset x
attribute (``<ds>_<attr>`` in the file names):

- ``split_srcc_<ds>_<attr>.{md,csv,tex}`` and ``.{png,pdf}`` (with >= 2 common splits): REQA Table III as the
  paper computes it (Sec. IV-C-2), the 1/0/-1 matrix of paired two-sided t-tests (alpha 0.05) on the SROCC of
  every model over the train-test iterations (:func:`iqalab.analysis.significance.split_metric_matrix`: 20
  random splits in the paper profile, the experiments' common splits in the default run), drawn as a coloured
  grid; ``summary.json`` holds the per-split SROCC; with one common split the summary says why it is missing;
- ``f_test_<ds>_<attr>.{md,csv,tex}`` and ``.{png,pdf}``: the second output, the classic 1/0/-1 matrix of
  one-sided F-tests on the residual variances after the 4-parameter logistic map on one split (alpha 0.05;
  :func:`iqalab.analysis.significance.residual_f_test_matrix`), drawn as a coloured grid;
- ``compare_tests_<ds>_<attr>.{md,csv}``: for every pair of models, the verdicts of the F-test, the paired
  Pitman-Morgan test on the same residuals, the paired bootstrap of the SRCC difference (with its 95% CI) and,
  with at least 3 common splits, the Wilcoxon signed-rank test of per-split SRCC; ``agree`` is False where the
  tests disagree (:func:`iqalab.analysis.significance.compare_tests`);
- ``bootstrap_ci.{md,csv}``: percentile bootstrap 95% CIs of each model's SRCC and (raw) PLCC on each test split,
  ``evaluate.bootstrap`` resamples (0 turns the bootstraps off);
- ``disagreements.{md,csv}``: every model pair on which the tests disagree, all datasets together;
- ``summary.json``: per dataset/attribute the split used, image count, models and counts of disagreements, and
  ``unavailable``: the experiments on that dataset whose model could not run (zero-shot weights missing,
  :mod:`iqalab.status`) with their status; they have no predictions and take no part in any test.

Alignment: models are compared only on the images they all predicted. Within a split, predictions are joined on
``image_id`` (inner join); the F-test, Pitman-Morgan and bootstrap use the first split (sorted by name) that every
model of the group has, or, when no split is common to all, the split shared by the most models (the others are
listed as ``excluded``). Per-split SRCCs for the Wilcoxon test use the splits common to the compared models.
Rows and columns are the experiments' display labels (:func:`iqalab.analysis.evaluation.display_labels`).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from iqalab import provenance
from iqalab.analysis import metrics
from iqalab.analysis import significance as sig
from iqalab.analysis.evaluation import display_labels, load_predictions
from iqalab.config import Params
from iqalab.io import write_json
from iqalab.status import unavailable_reason
from iqalab.tables import Table, dataset_caption, matrix_table

log = logging.getLogger(__name__)
ALPHA = 0.05
MIN_IMAGES = 5


def _caption(layout: str, dataset: str, simulated: bool, notes: list[str]) -> str:
    return ". ".join([layout, dataset_caption({dataset: simulated}), *notes]) + "."


def run(params: Params, root: Path, figures: bool = True) -> dict[str, pd.DataFrame]:
    """Stage ``significance``: write the matrices, test comparisons, CIs and figures; return them by name."""
    started = time.perf_counter()
    root = Path(root)
    out = root / "results" / "significance"
    out.mkdir(parents=True, exist_ok=True)
    predictions, meta = load_predictions(params, root)
    labels = display_labels(meta)
    test = predictions[predictions["role"] == "test"]
    n_boot, seed = params.evaluate.bootstrap, params.seed
    simulated_by_ds = {}
    for info in meta.values():
        ds = str(info["dataset"])
        simulated_by_ds[ds] = simulated_by_ds.get(ds, False) or bool(info.get("simulated"))
    results: dict[str, pd.DataFrame] = {}
    tables: list[Table] = []
    figures_out: list[tuple[pd.DataFrame, str, str, bool]] = []
    summary: dict[str, Any] = {}
    disagreements = []
    for (dataset, attr), part in test.groupby(["dataset", "attribute"], sort=False):
        key = f"{dataset}_{attr}"
        models = list(dict.fromkeys(part["experiment"]))
        simulated = simulated_by_ds.get(dataset, False)
        split, compared = sig.choose_split(part, models)
        entry: dict[str, Any] = {"models": [labels[m] for m in models], "split": split,
                                 "excluded": [labels[m] for m in models if m not in compared],
                                 "unavailable": {labels[e]: str(info["status"]) for e, info in meta.items()
                                                 if str(info["dataset"]) == dataset
                                                 and unavailable_reason(info) is not None}}
        summary[f"{dataset}/{attr}"] = entry
        if split is None or len(compared) < 2:
            log.info("%s/%s: fewer than two models on a common split; nothing to compare", dataset, attr)
            continue
        aligned = sig.align_split(part, split, compared)
        entry["n_images"] = len(aligned.mos)
        if len(aligned.mos) < MIN_IMAGES:
            log.warning("%s/%s: only %d common test images; no tests", dataset, attr, len(aligned.mos))
            continue
        preds = {labels[m]: aligned.preds[m].to_numpy(float) for m in compared}
        mos = aligned.mos.to_numpy(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.MetricWarning)
            matrix = sig.residual_f_test_matrix(preds, mos, alpha=ALPHA)
            splits, split_srcc = sig.per_split_srcc(part, compared)
            by_split = ({labels[m]: v for m, v in split_srcc.items()} if len(splits) >= 3 else None)
            compare = sig.compare_tests(preds, mos, by_split, alpha=ALPHA, n_boot=max(n_boot, 0), seed=seed)
        if n_boot <= 0 and not compare.empty:  # no bootstrap: its verdict is not a test result
            compare = compare.drop(columns=["bootstrap_srcc", "p_bootstrap"])
            verdict_cols = [c for c in ("f_test", "pitman_morgan", "wilcoxon_splits") if c in compare.columns]
            compare["agree"] = compare[verdict_cols].nunique(axis=1) == 1
        entry.update(n_pairs=len(compare), n_disagree=int((~compare["agree"]).sum()) if len(compare) else 0,
                     common_splits=len(splits),
                     split_srcc={labels[m]: [None if pd.isna(v) else float(v) for v in split_srcc[m]]
                                 for m in compared})
        base_notes = [f"split {split}, {len(mos)} common test images", f"one-sided alpha = {ALPHA}"]
        tables.append(matrix_table(
            f"f_test_{key}", matrix,
            _caption("REQA Table III layout, second output: F-test on residual variances after the 4-parameter "
                     "logistic map on one split; 1 = row model significantly better than column model, -1 worse, "
                     "0 indistinguishable",
                     dataset, simulated, base_notes), digits=0, bold=False, row_name="model"))
        figures_out.append((matrix, f"f_test_{key}", f"{dataset}: {attr}, F-test on residuals", simulated))
        if len(splits) >= 2:  # REQA Table III as the paper computes it: SROCC over the train-test iterations
            split_matrix = sig.split_metric_matrix({labels[m]: v for m, v in split_srcc.items()}, alpha=ALPHA)
            tables.append(matrix_table(
                f"split_srcc_{key}", split_matrix,
                _caption("REQA Table III (the paper's test): paired two-sided t-test on the SROCC of each model "
                         "over the train-test iterations; 1 = row model significantly better than column model, "
                         "-1 worse, 0 indistinguishable", dataset, simulated,
                         [f"{len(splits)} common splits (paper: 20)", f"alpha = {ALPHA}",
                          "second output: f_test_ (residual F-test on one split)"]),
                digits=0, bold=False, row_name="model"))
            figures_out.append((split_matrix, f"split_srcc_{key}",
                                f"{dataset}: {attr}, t-test on SROCC over {len(splits)} splits", simulated))
            entry["table3"] = f"split_srcc_{key}"
            results[f"split_srcc_{key}"] = split_matrix
        else:
            entry["table3"] = (f"not computed: {len(splits)} common split(s), the t-test on SROCC over the "
                               "train-test iterations needs >= 2; f_test_ is the only matrix")
        compare_frame = compare.set_index(["model_a", "model_b"])
        tables.append(Table(
            f"compare_tests_{key}", compare_frame,
            _caption("Pairwise tests (verdict for model_a: 1 better, -1 worse, 0 no difference): residual "
                     "F-test, paired Pitman-Morgan test, paired bootstrap of the SRCC difference"
                     + (", Wilcoxon signed-rank over splits" if by_split is not None else "")
                     + "; agree = all verdicts equal", dataset, simulated,
                     [*base_notes, f"{n_boot} bootstrap resamples"]), bold=False))
        if len(compare):
            extra = compare.loc[~compare["agree"]].assign(dataset=dataset, attribute=attr)
            if n_boot > 0 and len(extra):
                ci = [sig.paired_bootstrap_srcc(preds[a], preds[b], mos, n_boot=n_boot, seed=seed)
                      for a, b in zip(extra["model_a"], extra["model_b"])]
                extra = extra.assign(srcc_diff=[c["diff"] for c in ci], ci_low=[c["ci_low"] for c in ci],
                                     ci_high=[c["ci_high"] for c in ci])
            disagreements.append(extra)
        results[f"f_test_{key}"] = matrix
        results[f"compare_tests_{key}"] = compare
    if n_boot > 0 and not test.empty:
        ci_frame = sig.bootstrap_table(test, labels, n_boot, seed)
        datasets = {d: simulated_by_ds.get(d, False) for d in ci_frame["dataset"].unique()}
        tables.append(Table("bootstrap_ci", ci_frame.set_index(["dataset", "attribute", "model", "split"]),
                            f"Percentile bootstrap 95% confidence intervals over test images ({n_boot} "
                            f"resamples, PLCC raw). {dataset_caption(datasets)}.", bold=False))
        results["bootstrap_ci"] = ci_frame
    if disagreements:
        frame = pd.concat(disagreements, ignore_index=True)
        lead = ["dataset", "attribute", "model_a", "model_b"]
        frame = frame[lead + [c for c in frame.columns if c not in lead]]
        datasets = {d: simulated_by_ds.get(d, False) for d in frame["dataset"].unique()}
        tables.append(Table("disagreements", frame.set_index(lead),
                            "Model pairs on which the significance tests disagree (1 = model_a better). "
                            f"{dataset_caption(datasets)}.", bold=False))
        results["disagreements"] = frame
    written = set()
    for table in tables:
        formats = ("md", "csv", "tex") if table.name.startswith(("f_test_", "split_srcc_")) else ("md", "csv")
        written |= {p.name for p in table.write(out, formats)}
    if figures:
        import matplotlib.pyplot as plt

        from iqalab.eval_figures import significance_grid
        from iqalab.plots import save

        for matrix, stem, title, simulated in figures_out:
            fig = significance_grid(matrix, title, simulated)
            written |= {p.name for p in save(fig, out / stem)}
            plt.close(fig)
    write_json(out / "summary.json", {**summary, "_provenance": provenance.collect(params)})
    written.add("summary.json")
    for path in out.iterdir():
        if path.is_file() and path.name not in written and path.suffix in {".md", ".csv", ".tex", ".png", ".pdf"}:
            path.unlink()
    log.info("significance: %d dataset/attribute groups in %.1f s", len(summary), time.perf_counter() - started)
    return results
