"""The paper-table registry: names, aliases, the score groups tables need, order, and refusal of duplicates."""

from __future__ import annotations

import shutil

import pytest

from iqalab import paper_tables
from iqalab.paper_tables import registry


def test_table_names_are_the_tags_params_may_use() -> None:
    names = paper_tables.table_names()
    assert len(names) == len(set(names)), "a tag selects one table"
    assert {"tuningiqa_table2", "fhiqa_table1", "reqa_table1", "sfiqa_table6"} <= set(names)
    assert {"reqa_table5", "reqa_table6"} <= set(names), "REQA Tables V-VI are aliases of the ablation layout"
    assert "tuningiqa_tabel2" not in names and "all_metrics" not in names, "all_metrics is always written"


def test_tables_come_in_the_papers_order_and_live_in_their_paper_module() -> None:
    entries = paper_tables.registered_tables()
    papers = [entry.paper for entry in entries]
    assert papers == sorted(papers, key=registry.PAPERS.index), "TuningIQA, FHIQA, REQA, SFIQA"
    assert all(entry.name.startswith(entry.paper) for entry in entries)


def test_score_groups_follow_the_tables_that_read_them() -> None:
    assert paper_tables.tags_needing("tier") == {"reqa_table1", "reqa_ablation", "reqa_table5", "reqa_table6"}
    assert paper_tables.tags_needing("scene_median") == {"fhiqa_table1"}


def test_a_tag_cannot_be_registered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_TABLES", dict(registry._TABLES))  # leave the real registry untouched

    def table(ctx, exps):  # noqa: ANN001, ANN202
        return None

    with pytest.raises(ValueError, match="'reqa_table5' is registered twice"):
        registry.register_table("reqa_extra", aliases=("reqa_table5",))(table)
    registry.register_table("reqa_extra")(table)
    assert registry.table_names()[-1] == "reqa_extra", "a table outside the four papers comes last"


def test_table2_input_size_is_what_training_gave_each_model_and_follows_the_config(project, toy_dataset) -> None:
    """TuningIQA Table 2's "Input Size" (#27): the training crop recorded by the engine, with the evaluation input
    beside it where that differs; changing the crop in params changes the cell."""
    from iqalab.models import get_model_class
    from iqalab.stages import evaluate
    from iqalab.train.engine import train_experiment

    from .conftest import toy_params

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    model = {"name": "backbone_mlp", **get_model_class("backbone_mlp").smoke_params}
    table2 = {"dataset": "toy", "model": model, "tables": ["tuningiqa_table2"]}
    params = project.write_params({**toy_params(
        crop48={**table2, "train": {"epochs": 1, "crop": 48}},
        crop32={**table2, "train": {"epochs": 1, "crop": 32, "eval_crop": 32}}),
        "evaluate": {"bootstrap": 0, "yardstick": False}})
    for name in ("crop48", "crop32"):
        train_experiment(params, name, project.root, progress=False)
    column = evaluate.run(params, project.root, figures=False)["tuningiqa_table2"].set_index("model")["Input Size"]
    assert column.to_dict() == {"crop48": "48×48 (test: 64×64)", "crop32": "32×32"}  # toy cache: 64 px
    md = (project.root / "results" / "tables" / "tuningiqa_table2.md").read_text()
    assert "| Input Size |" in md and "Input Size: what each model was given in training" in md.splitlines()[0]


def test_table4_labels_finelive_p_and_its_size(project) -> None:
    """TuningIQA Table 4: a ``Data`` column names FineLive-p (train.subset camera_complete) or all images with the
    counts training recorded; the caption says when FineLive-p is the whole dataset, and which rows kept or
    dropped images lacking a camera parameter."""
    from iqalab.stages import evaluate

    from .evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment

    frame = with_predictions(ground_truth(), "noisy")
    spec = {"tables": ["tuningiqa_table4"]}

    def run(p_counts: dict[str, int], notes: dict | None = None) -> tuple:  # noqa: ANN202
        write_experiment(project.root, "full", frame, tables=spec["tables"], label="Baseline",
                         extra_meta={"subset": "all", "n_images": {"scene": {"train": 40, "val": 5, "test": 15}}})
        write_experiment(project.root, "p", frame, tables=spec["tables"], label="FineLive-p: w/ GCPF",
                         model_kwargs={"use_gcpf": True},
                         extra_meta={"subset": "camera_complete", "n_images": {"scene": p_counts},
                                     "notes": notes or {}})
        params = project.write_params(params_dict({"full": spec, "p": spec}))
        table = evaluate.run(params, project.root, figures=False)["tuningiqa_table4"].set_index("model")
        caption = (project.root / "results" / "tables" / "tuningiqa_table4.md").read_text().splitlines()[0]
        return table, caption

    table, caption = run({"train": 30, "val": 0, "test": 10},
                         {"missing_camera": "drop", "missing_camera_images": {"train": 3, "test": 1}})
    assert table["Data"].to_dict() == {"Baseline": "all: 40 train + 5 val / 15 test",
                                       "FineLive-p: w/ GCPF": "FineLive-p: 30 train / 10 test"}
    assert "FineLive-p rows: only the images with all seven camera parameters" in caption
    assert "FineLive-p is the whole dataset" not in caption
    assert "FineLive-p: w/ GCPF: images lacking a camera parameter left out (3 train, 1 test)" in caption
    table, caption = run({"train": 40, "val": 5, "test": 15})
    assert "here every image has them, so FineLive-p is the whole dataset" in caption
    assert "lacking a camera parameter" not in caption


def test_fhiqa_table1_says_what_each_row_is(project) -> None:
    """FHIQA Table I (#27): a ``Training`` column names each row's training data and starting weights, zero-shot
    or published, from what training recorded (model, model arguments, notes)."""
    from iqalab.stages import evaluate

    from .evaluate_fakes import ground_truth, params_dict, with_predictions, write_experiment

    frame = with_predictions(ground_truth(n_images=40, n_scenes=2), "noisy")
    rows = {
        "dbcnn": ("dbcnn", {"backbone": "resnet18", "pretrained": False}, {}),
        "dbcnn_livec": ("dbcnn", {"backbone": "vgg16", "pretrained": True,
                                  "release_weights": "/weights/dbcnn_livec.pkl"}, {}),
        "hyper": ("hyperiqa", {"pretrained": True}, {}),
        "musiq": ("pyiqa_arch:musiq", {"backbone_weights": "/weights/musiq_koniq_ckpt.pth"}, {"pretrained": False}),
        "zs": ("pyiqa:musiq", {}, {}),
        "niqe": ("niqe", {}, {"trained": False, "raw_score": "NIQE", "variant": "NIQE"}),
        "brisque": ("brisque", {"regressor": "train"}, {"trained": True, "variant": "BRISQUE, SVR retrained"}),
    }
    spec = {"tables": ["fhiqa_table1"], "protocol": "per_scene"}
    for name, (model, kwargs, notes) in rows.items():
        write_experiment(project.root, name, frame, dataset="toy", model=model, model_kwargs=kwargs,
                         extra_meta={"notes": notes}, **spec)
    params = project.write_params(params_dict(dict.fromkeys(rows, spec)))
    table = evaluate.run(params, project.root, figures=False)["fhiqa_table1"].set_index("model")
    column = next(c for c in table.columns if str(c).startswith("Training"))
    assert table[column].to_dict() == {
        "dbcnn": "trained on toy, random init", "dbcnn_livec": "trained on toy, from dbcnn_livec.pkl",
        "hyper": "trained on toy, ImageNet backbone",
        "musiq": "trained on toy, from musiq_koniq_ckpt.pth", "zs": "zero-shot (published weights; not trained here)",
        "niqe": "none (published model)", "brisque": "SVR fitted on toy"}


def test_ablation_settings_show_the_default_a_row_ran_with():
    from iqalab.paper_tables.common import differing_settings

    meta = {"full": {"model": "tuningiqa", "model_kwargs": {"use_gcpf": True, "missing_camera": "unknown"}},
            "base": {"model": "tuningiqa", "model_kwargs": {"use_gcpf": False}},
            "odd": {"model": "not_a_registered_model", "model_kwargs": {"use_gcpf": False}}}
    full, base, odd = differing_settings(meta, ["full", "base", "odd"])
    assert "missing_camera=unknown" in full and "use_gcpf=True" in full
    assert "missing_camera=refuse" in base and "use_gcpf=False" in base  # TuningIQA's default, not None
    assert "missing_camera=None" in odd  # an unknown model has no defaults to show


def test_caption_names_the_rows_trained_under_bf16():
    """A table whose rows trained under bf16 autocast (train.cpu_amp on an AMX CPU, or CUDA) says which and where;
    fp32 rows and runs recorded before train_precision existed add nothing."""
    from iqalab.paper_tables.common import precision_notes

    meta = {"a": {"train_precision": "bf16 autocast, channels_last (CPU with AMX); fp32 predictions"},
            "b": {"train_precision": "fp32"}, "c": {}, "d": {"train_precision": "bf16 autocast (CUDA); fp32 predictions"}}
    labels = {"a": "DB-CNN", "b": "NIQE", "c": "Old", "d": "HyperIQA"}
    assert precision_notes(meta, labels) == [
        "trained under bf16 autocast (predictions in fp32): DB-CNN (CPU with AMX); HyperIQA (CUDA)"]
    assert precision_notes({"b": meta["b"], "c": {}}, labels) == []
    mixed = {"a": {"train_precision": "fp32 (split_0); bf16 autocast, channels_last (CPU with AMX); fp32 predictions "
                                      "(split_1, split_2)"}}
    assert precision_notes(mixed, labels) == [
        "trained under bf16 autocast (predictions in fp32): DB-CNN (CPU with AMX; splits split_1, split_2)"]
