"""Every comparison row of the four papers' main tables, and whether and how it runs here (issue #22).

TuningIQA Table 2, FHIQA Table I, REQA Table II and SFIQA-Assessor Table II compare against published methods.
:data:`COMPARISON_TABLES` lists each of their rows with one of :data:`KINDS` and the model that provides it (an
own model, a ``pyiqa_arch:<arch>`` trained here with pretrained weights off, a zero-shot ``pyiqa:<metric>``) or
the reason it cannot run offline. ``docs/baselines.md`` shows these lists (:func:`section_markdown`; a test keeps
the page and this module in step), and :func:`rows_not_run` gives a table the rows it must list with a reason.

Plain data, no torch: the table code may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how a paper's row is provided here
KINDS = ("runs", "runs, differently initialised", "runs (pyiqa arch)", "runs (pyiqa arch), random init",
         "zero-shot only", "not yet", "cannot run")
#: kinds whose row has no trained counterpart here (a table lists them with the reason)
NOT_RUN = frozenset({"zero-shot only", "not yet", "cannot run"})


@dataclass(frozen=True)
class Row:
    """One comparison row of a paper's table: its label there, how it runs here (:data:`KINDS`), and the model
    (backticked registry names) or the reason it cannot."""

    label: str
    kind: str
    how: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"row {self.label!r}: kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class ComparisonTable:
    """A paper table's heading (with its ``tables:`` tag) and its comparison rows in the paper's order."""

    heading: str
    rows: tuple[Row, ...]


COMPARISON_TABLES: dict[str, ComparisonTable] = {
    'tuningiqa_table2': ComparisonTable(
        'TuningIQA, Table 2 (FGLive-10K; `tuningiqa_table2`)',
        (
            Row('NIQE', 'runs',
                'own `niqe` (published LIVE pristine model, whole image at its stored resolution)'),
            Row('ILNIQE', 'zero-shot only',
                '`pyiqa:ilniqe` when pyiqa and its template file are cached; not implemented here'),
            Row('BRISQUE', 'runs',
                'own `brisque` (published LIVE SVR)'),
            Row('DBCNN (VGG16)', 'runs',
                'own `dbcnn` (VGG-16 in the paper profile; S-CNN pre-training set unavailable)'),
            Row('HyperIQA (ResNet-50)', 'runs',
                'own `hyperiqa`'),
            Row('MT-A (Fang et al. 2020)', 'cannot run',
                'no implementation here or in pyiqa; `backbone_mlp` (ResNet + one head per attribute) is the nearest, not labelled MT-A'),
            Row('CLIP-IQA+', 'zero-shot only',
                "trained CLIP-IQA+ is prompt learning on frozen CLIP weights: without CLIP's weights there is nothing to train; `pyiqa:clipiqa+` with cached weights"),
            Row('MUSIQ', 'runs (pyiqa arch)',
                '`pyiqa_arch:musiq`, random init (paper: ImageNet-pretrained); also `pyiqa:musiq` zero-shot'),
            Row('SARQUE (Huang et al. 2023)', 'cannot run',
                'no public implementation available offline (not in pyiqa)'),
            Row('LIQE', 'zero-shot only',
                'CLIP ViT-B/32 weights needed to train; `pyiqa:liqe` with cached weights'),
            Row('Q-Align (mPLUG-Owl2-7B)', 'zero-shot only',
                '8.2 B-parameter LMM from the Hugging Face hub; `pyiqa:qalign` with cached weights and a GPU'),
            Row('Compare2Score (mPLUG-Owl2-7B)', 'zero-shot only',
                'as Q-Align; `pyiqa:compare2score`'),
            Row('TuningIQA (MobileNetV3-S, ResNet-50)', 'runs',
                'own `tuningiqa`'),
        )),
    'fhiqa_table1': ComparisonTable(
        'FHIQA, Table I (PIQ23, per-scene medians; `fhiqa_table1`)',
        (
            Row('DB-CNN (LIVE C)', 'runs, differently initialised',
                'own `dbcnn`; the LIVE Challenge checkpoint it starts from is not available offline'),
            Row('MUSIQ (KonIQ-10k)', 'runs (pyiqa arch), random init',
                "`pyiqa_arch:musiq`; with pyiqa's KonIQ checkpoint on disk, `backbone_weights: <file>` starts from it as the paper does"),
            Row('MUSIQ (PaQ-2-PiQ)', 'runs (pyiqa arch), random init',
                'as above with the PaQ-2-PiQ checkpoint'),
            Row('HyperIQA*', 'runs',
                'own `hyperiqa`'),
            Row('SEM-HyperIQA*', 'runs',
                'own `sem_hyperiqa`'),
            Row('SEM-HyperIQA-CO*', 'runs',
                'own `sem_hyperiqa_co`'),
            Row('FULL-HyperIQA*', 'runs',
                'own `fhiqa`'),
        )),
    'reqa_table2': ComparisonTable(
        'REQA, Table II (CLIVE, BID, KonIQ; `reqa_table2`)',
        (
            Row('BRISQUE', 'runs',
                'own `brisque` with `regressor: train` (REQA retrains the SVR)'),
            Row('ILNIQE', 'zero-shot only',
                '`pyiqa:ilniqe` (opinion-unaware, needs no training) when pyiqa and its template file are cached'),
            Row('HOSA', 'cannot run',
                'no implementation here or in pyiqa (codebook of high-order statistics)'),
            Row('BIECON', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('WaDIQaM', 'runs (pyiqa arch)',
                "`pyiqa_arch:wadiqam` (pyiqa's `WaDIQaM`, no-reference), trained from scratch as the paper"),
            Row('SFA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('PQR', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('DBCNN', 'runs',
                'own `dbcnn`'),
            Row('SGDNet', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('MetaIQA', 'cannot run',
                'pyiqa has the architecture (`metaiqa_arch`) but not the meta-learned prior on synthetic distortions that defines the method'),
            Row('HyperIQA', 'runs',
                'own `hyperiqa`'),
            Row('AIGQA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('OLNet', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('REQA', 'runs',
                'own `reqa`'),
        )),
    'sfiqa_table2': ComparisonTable(
        'SFIQA-Assessor, Table II (SFIQA-Bench; `sfiqa_table2`)',
        (
            Row('BRISQUE', 'runs',
                'own `brisque` (`regressor: train`: "all methods except NIQE and SER-FIQ are retrained")'),
            Row('NIQE', 'runs',
                'own `niqe`'),
            Row('HyperIQA', 'runs',
                'own `hyperiqa`'),
            Row('TReS', 'runs (pyiqa arch)',
                '`pyiqa_arch:tres`, random init (paper: ImageNet ResNet-50)'),
            Row('MUSIQ', 'runs (pyiqa arch)',
                '`pyiqa_arch:musiq`, random init'),
            Row('MANIQA', 'runs (pyiqa arch)',
                '`pyiqa_arch:maniqa`, random init (paper: ImageNet-21k ViT-B/8)'),
            Row('StairIQA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('CLIP-IQA', 'zero-shot only',
                "retraining needs CLIP's weights; `pyiqa:clipiqa` with cached weights"),
            Row('LIQE', 'zero-shot only',
                'as CLIP-IQA; `pyiqa:liqe`'),
            Row('TOPIQ', 'runs (pyiqa arch)',
                "`pyiqa_arch:topiq` (pyiqa's `CFANet`, no-reference), random init (paper: ImageNet ResNet-50); also `pyiqa:topiq_nr` zero-shot"),
            Row('SER-FIQ', 'cannot run',
                "needs a face-recognition network's weights (ArcFace); not available offline"),
            Row('SDD-FIQA', 'cannot run',
                "needs a face-recognition network's weights; not available offline"),
            Row('IFQA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('DN-PIQA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('DSL-FIQA', 'cannot run',
                'no implementation here or in pyiqa'),
            Row('SFIQA-Assessor-S / XS / XXS', 'runs',
                'own `sfiqa_s`, `sfiqa_xs`, `sfiqa_xxs`'),
        )),
}


def section_markdown(tag: str) -> str:
    """The ``docs/baselines.md`` section of one paper table: heading and a row / here / how table."""
    table = COMPARISON_TABLES[tag]
    lines = [f"## {table.heading}", "", "| row | here | how / why not |", "|---|---|---|"]
    lines += [f"| {r.label} | {r.kind} | {r.how} |" for r in table.rows]
    return "\n".join(lines) + "\n"


def rows_not_run(tag: str) -> list[tuple[str, str]]:
    """``(paper's label, reason)`` of the rows of table ``tag`` that have no trained counterpart here."""
    table = COMPARISON_TABLES.get(tag)
    return [] if table is None else [(r.label, f"{r.kind}: {r.how}") for r in table.rows if r.kind in NOT_RUN]


__all__ = ["COMPARISON_TABLES", "KINDS", "NOT_RUN", "ComparisonTable", "Row", "rows_not_run", "section_markdown"]
