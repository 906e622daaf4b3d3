"""``results/report.md``: every table and figure of a run in one Markdown page, in the order of the papers.

The report is the pipeline's last stage (``iqalab report``). It collects what the other stages wrote, without
recomputing anything, so it is cheap and always matches the files next to it:

1. a header naming the params profile, seed and a digest of the params that produced the run, a clear
   **simulated data** warning when any dataset comes from the simulator (``source: sim``) or the toy generator,
   the experiments (model, dataset, whether they have predictions, or why a zero-shot model could not run) and
   the full params in a folded block;
2. the paper sections in the compendium's order - TuningIQA (Sheng et al.), FHIQA, REQA, SFIQA - each with its
   tables (``results/tables/<paper>_*.md``, in the order of :func:`iqalab.paper_tables.registered_tables`) and the
   evaluation figures of the datasets its experiments use (``results/figures/evaluation/*_<dataset>_*.png``; a
   dataset goes to the first paper one of its experiments is tagged for), then ``all_metrics``;
3. gMAD (``results/gmad/*.md``, ``results/figures/gmad/``), significance (``results/significance/*.md|png``),
   camera tuning (``results/tuning/*.md``, ``results/figures/tuning/``) and the dataset statistics
   (``results/stats/<ds>.json`` headline numbers, ``results/figures/<ds>/``);
4. an "Other outputs" section for any table or figure no section claims, so nothing the run wrote is missing;
5. an "Environment" section (issue 28): the :mod:`iqalab.provenance` record of each output that carries one (every
   JSON with a ``provenance`` / ``_provenance`` field, every Markdown table's footer) grouped by record - code commit,
   uncommitted changes, params hash, lock hash, device, seed, package versions - and the report's own.

Missing pieces are skipped (a stage not run yet leaves its section out). Embedded tables lose their provenance
footer line (the environment section lists it once per record instead). Figures are linked relative to
``results/`` (the report's folder), so the page renders on GitHub and in any Markdown viewer. The text holds no
timestamp: the same outputs give the same report, byte for byte, and DVC sees no change.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from iqalab import provenance
from iqalab.config import Params
from iqalab.io import write_text
from iqalab.status import unavailable_reason

log = logging.getLogger(__name__)

#: (key, section title, paper citation) in the compendium's order
PAPERS: tuple[tuple[str, str, str], ...] = (
    ("tuningiqa", "TuningIQA",
     "Sheng et al., TuningIQA: Fine-Grained Blind Image Quality Assessment for Livestreaming Camera Tuning "
     "(FGLive-10K)"),
    ("fhiqa", "FHIQA", "Chahine et al., Generalized Portrait Quality Assessment (FULL-HyperIQA on PIQ23), 2024"),
    ("reqa", "REQA", "Li and Huo, REQA: Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect, "
     "2022"),
    ("sfiqa", "SFIQA", "Jiang et al., Surveillance Facial Image Quality Assessment: A Multi-dimensional Dataset "
     "and Lightweight Model (SFIQA-Bench, SFIQA-Assessor), 2026"),
)
#: table-name prefixes in display order within the significance and tuning sections
SIGNIFICANCE_ORDER = ("split_srcc_", "f_test_", "compare_tests_", "bootstrap_ci", "disagreements")
TUNING_ORDER = ("win_rates", "regret")
GMAD_ORDER = ("ranking", "aggressiveness", "resistance")
#: evaluation-figure kinds (stem prefixes written by :func:`iqalab.eval_figures.evaluation_figures`)
EVAL_KINDS = ("scatter", "tiers", "fg_acc_dmos")


@dataclass
class Section:
    """One part of the report: a title, a sentence of context, then its pieces in display order: Markdown
    tables (``.md`` files, embedded), texts (Markdown written here), figures (PNG files, linked) and
    sub-headings, as ``(kind, value)`` with kind ``table`` / ``text`` / ``figure`` / ``heading``."""

    anchor: str
    title: str
    intro: str = ""
    tables: list[Path] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def items(self) -> list[tuple[str, Any]]:
        """Tables, then texts, then figures, then the free-form ``blocks``."""
        return [*(("table", t) for t in self.tables), *(("text", t) for t in self.texts),
                *(("figure", f) for f in self.figures), *self.blocks]

    @property
    def empty(self) -> bool:
        return not any(kind != "heading" for kind, _ in self.items())


def _safe_name(text: str) -> str:
    """The file-name form of a dataset name used by the evaluation figures."""
    from iqalab.eval_figures import safe_name

    return safe_name(text)


def _ordered(paths: Iterable[Path], order: Sequence[str]) -> list[Path]:
    """``paths`` sorted by the first prefix of ``order`` their stem starts with (unknown last), then by name."""
    def key(path: Path) -> tuple[int, str]:
        rank = next((k for k, prefix in enumerate(order) if path.stem.startswith(prefix)), len(order))
        return rank, path.stem

    return sorted(paths, key=key)


def _paper_table_order() -> list[str]:
    from iqalab.paper_tables import registered_tables

    return [entry.name for entry in registered_tables()]


def simulated_datasets(params: Params, root: Path) -> dict[str, bool]:
    """Dataset -> whether its data are simulated: ``source`` ``sim`` or ``toy`` in ``params``, or a
    ``simulated: true`` flag in any predictions JSON or ``results/stats/<ds>.json`` of the run."""
    flags = {name: cfg.source in {"sim", "toy"} for name, cfg in params.datasets.items()}
    for path in sorted((root / "results" / "predictions").glob("*.json")):
        meta = _read_json(path)
        if meta.get("dataset") and meta.get("simulated"):
            flags[str(meta["dataset"])] = True
    for path in sorted((root / "results" / "stats").glob("*.json")):
        meta = _read_json(path).get("dataset", {})
        if isinstance(meta, dict) and meta.get("simulated"):
            flags[path.stem] = True
    return flags


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s (%s); skipped", path, exc)
        return {}
    return value if isinstance(value, dict) else {}


def params_digest(params: Params) -> str:
    """First 12 hex digits of the sha256 of the params as canonical JSON (same params, same digest): the
    provenance records' ``params_hash`` (:func:`iqalab.provenance.params_hash`)."""
    return provenance.params_hash(params)


def dataset_papers(params: Params) -> dict[str, str]:
    """Dataset -> the first paper (in :data:`PAPERS` order) that some experiment on it is tagged for."""
    keys = [key for key, _, _ in PAPERS]
    best: dict[str, int] = {}
    for exp in params.experiments.values():
        for tag in exp.tables:
            prefix = tag.split("_", 1)[0]
            if prefix in keys:
                best[exp.dataset] = min(best.get(exp.dataset, len(keys)), keys.index(prefix))
    return {ds: keys[k] for ds, k in best.items()}


def _evaluation_dataset(stem: str, datasets: Sequence[str]) -> str | None:
    """The dataset an evaluation figure ``<kind>_<dataset>[_<attribute>]`` shows (longest name first)."""
    kind = next((k for k in EVAL_KINDS if stem.startswith(k + "_")), None)
    if kind is None:
        return None
    rest = stem[len(kind) + 1:] + "_"
    for name in sorted(datasets, key=len, reverse=True):
        if rest.startswith(_safe_name(name) + "_"):
            return name
    return None


def frame_to_markdown(frame: pd.DataFrame) -> str:
    """A pipe table of ``frame`` (its columns only; ``|`` in cells escaped)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _stats_summary(path: Path) -> str | None:
    """Headline numbers of ``results/stats/<ds>.json`` as a Markdown table (None if missing or unreadable)."""
    report = _read_json(path) if path.is_file() else {}
    if not report:
        return None
    try:
        from iqalab.analysis.annotation import summary

        table = summary(report)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("report: %s has no readable summary (%s)", path, exc)
        return None
    return f"Headline numbers (`stats/{path.name}`):\n\n" + frame_to_markdown(table)


# ------------------------------------------------------------------------------------------------- collect
def collect_sections(params: Params, root: Path) -> list[Section]:
    """The report's sections (empty ones included) with the files each claims, in display order."""
    results = Path(root) / "results"
    tables_dir, figures_dir = results / "tables", results / "figures"
    # the cross-dataset tables (REQA / SFIQA Table IV) come from their own stage, beside results/tables
    all_tables = sorted([*tables_dir.glob("*.md"), *(results / "cross_dataset").glob("*.md")])
    all_figures = sorted([*figures_dir.rglob("*.png"), *figures_dir.rglob("*.jpg")])
    claimed: set[Path] = set()

    def claim(paths: Iterable[Path]) -> list[Path]:
        out = [p for p in paths if p not in claimed]
        claimed.update(out)
        return out

    sections: list[Section] = []
    order = _paper_table_order()
    ds_paper = dataset_papers(params)
    eval_figures = sorted((figures_dir / "evaluation").glob("*.png"))
    known_ds = sorted(set(params.datasets) | {d for d in ds_paper})
    for key, title, citation in PAPERS:
        tables = [p for p in all_tables if p.stem.startswith(key + "_")]
        tables.sort(key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.stem))
        figures = [p for p in eval_figures if ds_paper.get(_evaluation_dataset(p.stem, known_ds) or "") == key]
        datasets = sorted(d for d, k in ds_paper.items() if k == key)
        intro = f"{citation}." + (f" Datasets: {', '.join(datasets)}." if datasets else "")
        sections.append(Section(key, title, intro, claim(tables), figures=claim(figures)))
    sections.append(Section("all-metrics", "All experiments, all metrics",
                            "Every experiment x split x attribute with every metric (long format).",
                            claim(p for p in all_tables if p.stem == "all_metrics")))
    sections.append(Section("yardstick", "Learnability yardstick",
                            "References that are not models, per simulated dataset (issue #23): the panel ceiling "
                            "(MOS against the simulator's ground truth), the panel's split-half reliability and a "
                            "pixel-feature probe trained on the same split, beside the best model's test SRCC.",
                            claim(p for p in all_tables if p.stem.startswith("yardstick_"))))

    gmad_dir = results / "gmad"
    gmad_intro = "Group maximum differentiation competition between the trained models (Ma et al., 2016/2020)."
    summary = _read_json(gmad_dir / "summary.json") if (gmad_dir / "summary.json").is_file() else {}
    texts = [f"*gMAD skipped: {summary['skipped']}.*"] if summary.get("skipped") else []
    sections.append(Section("gmad", "gMAD", gmad_intro, claim(_ordered(gmad_dir.glob("*.md"), GMAD_ORDER)), texts,
                            claim(p for p in all_figures if p.parent == figures_dir / "gmad")))

    for anchor, title, intro, order in (
            ("significance", "Statistical significance",
             "Which differences between models are real (REQA Sec. IV-C-2): t-tests on the SROCC over the splits "
             "(REQA Table III), F-tests on residuals, paired tests, bootstrap confidence intervals.",
             SIGNIFICANCE_ORDER),
            ("tuning", "Camera tuning",
             "Each model picks camera settings for simulator scenes; win rates against a virtual rater panel and "
             "the ground-truth quality left behind (TuningIQA's application).", TUNING_ORDER)):
        folder = results / anchor
        sections.append(Section(anchor, title, intro, claim(_ordered(folder.glob("*.md"), order)),
                                figures=claim([*sorted(folder.glob("*.png")),
                                               *(p for p in all_figures if p.parent == figures_dir / anchor)])))

    stats_ds = {p.stem for p in (results / "stats").glob("*.json")}
    blocks: list[tuple[str, Any]] = []
    for name in sorted(set(params.datasets) | stats_ds):
        text = _stats_summary(results / "stats" / f"{name}.json")
        figures = claim(p for p in all_figures if p.parent == figures_dir / name)
        if text or figures:
            blocks += [("heading", name), *([("text", text)] if text else []), *(("figure", f) for f in figures)]
    sections.append(Section("dataset-statistics", "Dataset statistics",
                            "What each dataset is made of: MOS distributions, attribute correlations, OLS of "
                            "overall quality on the attributes, rater agreement, camera parameters.",
                            blocks=blocks))

    sections.append(Section("other", "Other outputs", "Tables and figures no section above claims.",
                            claim(all_tables), figures=claim(all_figures)))
    return sections


# --------------------------------------------------------------------------------------------------- write
def _header(params: Params, root: Path) -> list[str]:
    flags = simulated_datasets(params, root)
    simulated = sorted(d for d, sim in flags.items() if sim and d in params.datasets)
    real = sorted(d for d in params.datasets if d not in simulated)
    lines = ["# iqalab results report", "",
             f"Every table and figure of the run produced by params profile **{params.profile}** (seed "
             f"{params.seed}, params digest `{params_digest(params)}`), in the order of the papers. Generated by "
             "`python -m iqalab report` (DVC stage `report`) from the files under `results/`; regenerate it "
             "rather than editing it.", ""]
    if simulated:
        origin = {"sim": "camera simulator, virtual rater panel", "toy": "toy generator, synthetic MOS"}
        named = [f"{d} ({origin.get(params.datasets[d].source, 'simulated')})" for d in simulated]
        lines += [f"> **Simulated data.** {'; '.join(named)}: generated by iqalab, not collected from people. "
                  "These numbers show that the methods and the pipeline work; they are **not** reproductions "
                  "of the papers' results."
                  + (f" Real datasets: {', '.join(real)}." if real else ""), ""]
    return lines


def _run_details(params: Params, root: Path) -> list[str]:
    """The experiments table and the folded params dump."""
    flags = simulated_datasets(params, root)
    lines: list[str] = []
    rows = []
    for name, exp in params.experiments.items():
        meta_path = root / "results" / "predictions" / f"{name}.json"
        done = meta_path.is_file()
        status = unavailable_reason(_read_json(meta_path)) if done else None
        model_kwargs = params.model_kwargs(name)
        backbone = model_kwargs.get("backbone", "")
        rows.append({"experiment": name, "label": exp.label or name, "model": exp.model.name,
                     "backbone": backbone, "dataset": exp.dataset + (" (simulated)" if flags.get(exp.dataset) else ""),
                     "splits": ", ".join(exp.splits), "tables": ", ".join(exp.tables),
                     "predictions": status or ("yes" if done else "not run")})
    if rows:
        lines += ["## Experiments", "", frame_to_markdown(pd.DataFrame(rows))]
    dump = yaml.safe_dump(params.model_dump(mode="json", exclude_none=True), sort_keys=False, width=110)
    lines += [f"<details><summary>Params of this run (profile {params.profile})</summary>", "", "```yaml",
              dump.rstrip(), "```", "", "</details>", ""]
    return lines


def provenance_groups(root: Path) -> list[tuple[dict[str, Any], list[str]]]:
    """Each distinct provenance row (:func:`iqalab.provenance.summary_line`) of the outputs under
    ``root/results`` with the outputs (paths relative to ``results/``, sorted) that carry it: every JSON with a
    ``provenance`` or ``_provenance`` record and every Markdown table with a provenance footer."""
    results = Path(root) / "results"
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for path in sorted([*results.rglob("*.json"), *results.rglob("*.md")]):
        rel = path.relative_to(results).as_posix()
        if path.suffix == ".json":
            meta = _read_json(path)
            record = meta.get("provenance", meta.get("_provenance"))
            row = provenance.summary_line(record) if isinstance(record, dict) else None
        elif rel != "report.md":
            fields = provenance.parse_footer(path.read_text())
            row = provenance.footer_row(fields) if fields else None
        else:
            row = None
        if row is not None:
            groups.setdefault(json.dumps(row, sort_keys=True, default=str), (row, []))[1].append(rel)
    return list(groups.values())


def _outputs_cell(paths: Sequence[str]) -> str:
    """The outputs of one group: a file alone by name, several files of a folder as ``folder/*.ext (n)``."""
    by_kind: dict[tuple[str, str], list[str]] = {}
    for rel in paths:
        path = Path(rel)
        by_kind.setdefault((path.parent.as_posix(), path.suffix), []).append(rel)
    return ", ".join(f"`{files[0]}`" if len(files) == 1 else f"`{folder}/*{suffix}` ({len(files)})"
                     for (folder, suffix), files in by_kind.items())


def _environment(params: Params, root: Path) -> list[str]:
    """The "Environment" section: one row per distinct provenance record (see the module docstring)."""
    def cells(row: dict[str, Any], outputs: str) -> dict[str, Any]:
        env = "; ".join(f"{name} {row.get(name, provenance.UNKNOWN)}"
                        for name in (*provenance.PACKAGES, "python"))
        return {"outputs": outputs, "code commit": row["code"], "uncommitted changes": row["dirty"],
                "params": row["params"], "lock": row["lock"], "device": row["device"],
                "cpu": row.get("cpu", provenance.UNKNOWN), "seed": row["seed"], "versions": env}

    own = provenance.summary_line(provenance.collect(params))
    rows = [cells(row, _outputs_cell(paths)) for row, paths in provenance_groups(root)]
    rows.append(cells(own, "this report"))
    return ["## Environment", "",
            "Where each number comes from: the code commit (the last commit touching `src`, `notebooks`, "
            "`params.yaml`, `params/`, `dvc.yaml`), whether those paths had uncommitted changes (then "
            "`dvc.lock`, committed with the results, holds the md5 of every file each stage ran), the params hash "
            "(as in the header), the hash of `requirements.lock`, the device, the CPU model and its widest vector "
            "extension (results are bit for bit only on one CPU model), the seed and the package versions, "
            "per group of outputs that share them (`make verify` reruns the pipeline and compares the metrics).",
            "", frame_to_markdown(pd.DataFrame(rows))]


def _anchor_title(section: Section) -> str:
    return f"[{section.title}](#{re.sub(r'[^a-z0-9 -]', '', section.title.lower()).replace(' ', '-')})"


def _without_footer(text: str) -> str:
    """A table file's Markdown without its provenance footer line."""
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(f"<sub>{provenance.FOOTER_PREFIX}")).rstrip()


def render(params: Params, root: Path) -> str:
    """The report's Markdown text (see the module docstring)."""
    root = Path(root)
    results = root / "results"
    sections = [s for s in collect_sections(params, root) if not s.empty]
    lines = _header(params, root)
    if sections:
        lines += ["## Contents", "", *(["- [Experiments](#experiments)"] if params.experiments else []), *(f"- {_anchor_title(s)}" for s in sections),
                  "- [Environment](#environment)", ""]
    else:
        lines += ["*No tables or figures yet: run `dvc repro` first.*", ""]
    lines += _run_details(params, root)
    for section in sections:
        lines += [f"## {section.title}", "", section.intro, ""]
        for kind, value in section.items():
            if kind == "heading":
                lines += [f"### {value}", ""]
            elif kind == "text":
                lines += [str(value).rstrip(), ""]
            else:
                rel = Path(value).relative_to(results).as_posix()
                body = _without_footer(Path(value).read_text()) if kind == "table" else \
                    f"![{Path(value).stem}]({rel})"
                lines += [body, "", f"<sub>`{rel}`</sub>", ""]
    lines += _environment(params, root)
    return "\n".join(lines).rstrip() + "\n"


def build_report(params: Params, root: Path) -> Path:
    """Write ``root/results/report.md`` (atomically) and return its path."""
    root = Path(root)
    path = root / "results" / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(params, root)
    write_text(path, text)
    log.info("wrote %s (%d lines)", path, text.count("\n"))
    return path
