"""params.yaml validation: typos, bad values and unknown model kwargs fail with the key path."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from iqalab.config import ParamsError, load_params, parse_params

from .conftest import toy_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.experiments, "the default profile trains at least one experiment"
    for name, exp in params.experiments.items():
        assert exp.dataset in params.datasets, name
        params.train_config(name)


def test_paper_profile_is_valid():
    paper = REPO / "params" / "paper.yaml"
    if not paper.exists():
        pytest.skip("no paper profile yet")
    assert load_params(paper).profile == "paper"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["datasets"]["toy"].update(cache_sise=64), "datasets.toy.cache_sise: unknown key"),
        (lambda p: p["train_defaults"].update(epocs=3), "train_defaults.epocs: unknown key"),
        (lambda p: p["experiments"]["e"]["train"].update(lr=-1.0), "experiments.e.train.lr"),
        (lambda p: p["experiments"]["e"]["model"].update(backbon="x"), "experiments.e.model.backbon"),
        (lambda p: p["experiments"]["e"].update(dataset="nope"), "experiments.e.dataset: unknown dataset"),
        (lambda p: p["experiments"]["e"]["model"].update(name="nope"), "experiments.e.model.name"),
        (lambda p: p["train_defaults"].update(lr=math.nan), "train_defaults.lr: NaN/inf"),
        (lambda p: p["train_defaults"].update(batch_size=-4), "train_defaults.batch_size"),
        (lambda p: p["experiments"]["e"].update(splits=[]), "experiments.e.splits"),
        (lambda p: p.update(datasets={}), "datasets"),
    ],
)
def test_bad_params_name_the_key(mutate, expected):
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {}})
    parse_params(raw)  # the unmodified mapping is valid
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value), "errors are one line"


def test_unknown_key_lists_allowed_keys():
    raw = toy_params()
    raw["train_defaults"]["epocs"] = 3
    with pytest.raises(ParamsError, match=r"allowed keys: \[.*'epochs'"):
        parse_params(raw)


def test_experiment_inherits_and_overrides_train_defaults():
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {"epochs": 7}})
    params = parse_params(raw)
    cfg = params.train_config("e")
    assert cfg.epochs == 7 and cfg.batch_size == raw["train_defaults"]["batch_size"]


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "params.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(evil)


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_nbval_params_are_valid():
    raw = yaml.safe_load((REPO / "tests" / "nbval" / "params.yaml").read_text())
    parse_params(raw)


@pytest.mark.parametrize("name", ["params.yaml", "params/paper.yaml"])
def test_params_files_have_no_yaml_anchors(name):
    """``dvc exp run -S`` silently drops overrides of anchored or aliased keys (docs/experiments.md, pitfalls)."""
    from iqalab.io import project_root

    text = (project_root() / name).read_text()
    tokens = [t for t in yaml.scan(text) if isinstance(t, (yaml.AnchorToken, yaml.AliasToken))]
    assert not tokens, f"{name}: anchors/aliases at lines {[t.start_mark.line + 1 for t in tokens]}"


# ------------------------------------------------------------------------------- names checked against the code
def _write(tmp_path: Path, raw: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


SIM = {"source": "sim", "builder": "fglive_sim", "options": {"n_scenes": 3}}
ADAPTER = {"source": "adapter", "builder": "koniq10k", "raw": "data/raw/koniq10k"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # the five typos of issue 24, each with its key path and the names allowed there
        (lambda p: p.update(extra={"gmda": {"levels": 2}}), r"extra: removed.*allowed keys: \[.*'gmad'"),
        (lambda p: p.update(gmda={"levels": 2}), r"gmda: unknown key; allowed keys: \[.*'gmad'"),
        (lambda p: p.update(gmad={"pool_scene": 3}), r"gmad\.pool_scene: unknown key; allowed keys: \[.*'pool_scenes'"),
        (lambda p: p["datasets"]["toy"]["options"].update(n_scene=3),
         r"datasets\.toy\.options\.n_scene: unknown option of the toy generator; allowed: \[.*'n_scenes'"),
        (lambda p: p["datasets"].update(sim={**SIM, "options": {"n_scene": 3}}),
         r"datasets\.sim\.options\.n_scene: unknown option of simulator builder 'fglive_sim'; allowed: \[.*'n_scenes'"),
        (lambda p: p["datasets"].update(real={**ADAPTER, "options": {"n_split": 5}}),
         r"datasets\.real\.options\.n_split: unknown option of adapter 'koniq10k'; allowed: \[.*'n_splits'"),
        (lambda p: p["datasets"].update(real={**ADAPTER, "builder": "koniq"}), None),  # an alias is fine
        (lambda p: p["datasets"].update(sim={**SIM, "builder": "fglive"}),
         r"datasets\.sim\.builder: unknown simulator builder 'fglive'; available: \[.*'fglive_sim'"),
        (lambda p: p["experiments"]["e"].update(tables=["tuningiqa_tabel2"]),
         r"experiments\.e\.tables: unknown table 'tuningiqa_tabel2'; known: \[.*'tuningiqa_table2'"),
        (lambda p: p["experiments"]["e"].update(splits=["random_07"]),
         r"experiments\.e\.splits: dataset 'toy' has no split 'random_07'; available: \['scene', 'random_00', "
         r"'random_01'\]"),
        (lambda p: p["experiments"]["e"].update(splits=["fold_*"]), r"experiments\.e\.splits: .* no split 'fold_\*'"),
        (lambda p: p["experiments"]["e"].update(splits=["random_*", "scene"]), None),
        (lambda p: (p["datasets"].update(sim=SIM), p["experiments"]["e"].update(dataset="sim", splits=["fold_0"])),
         r"experiments\.e\.splits: dataset 'sim' has no split 'fold_0'; available: \['scene'\]"),
        (lambda p: p.update(gmad={"dataset": "nope"}), r"gmad\.dataset: unknown dataset 'nope'"),
        (lambda p: p.update(camera_tuning={"experiments": ["ghost"]}),
         r"camera_tuning\.experiments: unknown experiment 'ghost'"),
    ],
)
def test_check_names_every_key_path_and_the_allowed_names(tmp_path, capsys, mutate, expected):
    """``iqalab check`` rejects each typo before any training, on one line naming the key and what is allowed."""
    from iqalab.__main__ import main

    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "tables": ["tuningiqa_table2"]})
    assert main(["--params", str(_write(tmp_path, raw)), "check"]) == 0
    mutate(raw)
    code = main(["--params", str(_write(tmp_path, raw)), "check"])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0, err
        return
    assert code == 2
    assert re.search(r"iqalab check: error: params\.yaml: " + expected, err), err
    assert err.count("\n") == 1, "one line"


def test_builders_declare_the_splits_they_write(tmp_path):
    """The split names ``iqalab check`` compares with are the ones the builders write."""
    from iqalab.data.toy import build_toy, toy_split_names
    from iqalab.sim.builders import build, split_names

    toy = build_toy(tmp_path / "toy", n_scenes=3, per_scene=2, size=32, n_random_splits=3)
    assert toy_split_names(n_random_splits=3) == ["scene", "random_00", "random_01", "random_02"]
    assert set(toy.splits["split"]) == set(toy_split_names(n_random_splits=3))
    ugc = build("ugc_sim", tmp_path / "ugc", n_images=10, image_size=32, n_raters=3, n_splits=3)
    assert set(ugc.splits["split"]) == set(split_names("ugc_sim", n_splits=3)) == {"random_00", "random_01",
                                                                                   "random_02"}
    assert "val" not in set(ugc.splits["role"]), "REQA's 80/20 splits: no val images"
    assert split_names("face_sim", n_folds=2) == ["fold_0", "fold_1", "scene"]
    assert split_names("fglive_sim") == split_names("portrait_sim") == ["scene"]


def test_known_table_tags_are_the_registered_tables():
    from iqalab.config import known_table_tags
    from iqalab.paper_tables import table_names

    tags = known_table_tags()
    assert tags == list(table_names()) and "tuningiqa_table2" in tags and "reqa_table5" in tags


# ----------------------------------------------------------------------------------------- profiles as overlays
def test_overlay_merges_mappings_replaces_values_and_removes_null_entries(tmp_path):
    from iqalab.config import merge_overlay

    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "exps": {"keep": {"v": 1}, "drop": {"v": 2}}, "s": None}
    over = {"a": {"y": [3], "z": {"j": 2}}, "exps": {"drop": None, "new": {"v": 3}}, "s": 4}
    merged = merge_overlay(base, over)
    assert merged == {"a": {"x": 1, "y": [3], "z": {"k": 1, "j": 2}}, "exps": {"keep": {"v": 1}, "new": {"v": 3}},
                      "s": 4}
    assert base["exps"]["drop"] == {"v": 2} and "j" not in base["a"]["z"], "inputs are not modified"


def test_overlay_errors_name_the_file_that_sets_the_key(tmp_path):
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}})
    _write(tmp_path, raw)
    overlay = _write(tmp_path, {"base": "../params.yaml", "profile": "big",
                                "experiments": {"e": {"train": {"epocs": 3}}}}, "profiles/big.yaml")
    with pytest.raises(ParamsError, match=r"^big\.yaml: experiments\.e\.train\.epocs: unknown key; "
                                          r"allowed keys: \[.*'epochs'") as err:
        load_params(overlay)
    assert "\n" not in str(err.value)
    raw["datasets"]["toy"]["cache_sise"] = 64  # a typo in the base is reported in the base
    _write(tmp_path, raw)
    _write(tmp_path, {"base": "../params.yaml", "profile": "big"}, "profiles/big.yaml")
    with pytest.raises(ParamsError, match=r"^params\.yaml: datasets\.toy\.cache_sise: unknown key"):
        load_params(overlay)
    _write(tmp_path, {"base": "big.yaml"}, "profiles/big.yaml")
    with pytest.raises(ParamsError, match="a cycle"):
        load_params(overlay)
    _write(tmp_path, {"base": "nope.yaml"}, "profiles/big.yaml")
    with pytest.raises(ParamsError, match=r"base: .*nope\.yaml not found"):
        load_params(overlay)


def test_paper_profile_is_an_overlay_of_the_default_profile():
    """params/paper.yaml holds what differs; composed, it has the paper's settings and every default experiment
    but the CPU stand-in of Table 2's ResNet row and the CPU-sized SFIQA Table VI row (its S rows replace it)."""
    default, paper = load_params(REPO / "params.yaml"), load_params(REPO / "params" / "paper.yaml")
    raw = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    assert raw["base"] == "../params.yaml" and "datasets" in raw and "source" not in raw["datasets"]["fglive_sim"]
    assert paper.profile == "paper" and default.profile == "default"
    assert set(default.experiments) - set(paper.experiments) == {"tuningiqa_r18", "sfiqa_xxs_face_oem"}
    assert paper.datasets["fglive_sim"].options["n_scenes"] == 555 and paper.datasets["fglive_sim"].source == "sim"
    mnv3 = paper.train_config("tuningiqa_mnv3s")
    assert (mnv3.lr, mnv3.batch_size, mnv3.epochs, mnv3.max_pairs, mnv3.vflip) == (1e-5, 64, 5, None, True)
    assert paper.experiment("tuningiqa_mnv3s").tables == ["tuningiqa_table2", "tuningiqa_table3"]
    assert paper.model_kwargs("tuningiqa_r50")["backbone"] == "resnet50"
    assert paper.model_kwargs("reqa_ugc") == {"backbone": "resnet50", "pretrained": True, "steps": 4,
                                              "lstm_channels": 64, "token_dim": 224, "heads": 4, "hidden": 128,
                                              "pos_grid": 7, "test_crop": 224, "test_crops": 25}
    assert paper.model_kwargs("fhiqa_portrait")["scene_pool_width"] is None
    assert paper.experiment("baseline_face").splits == ["fold_*"]
    assert paper.train_config("hyperiqa_portrait").step_epochs[-1] == 290
    assert paper.train_config("hyperiqa_portrait").optimizer == "adam", "inherited from the default profile"
    assert (paper.evaluate.bootstrap, paper.gmad.pool_scenes, paper.camera_tuning.n_scenarios) == (1000, 300, 44)
    assert paper.camera_tuning.n_figure_scenes == default.camera_tuning.n_figure_scenes, "inherited"
    for name in paper.experiments:  # every experiment validates (model kwargs, tables, splits: load_params)
        assert paper.train_config(name).epochs >= 1


def test_paper_profile_keys_that_must_not_be_inherited_from_the_cpu_defaults():
    """Overlays merge key by key, so a CPU setting of the default profile survives unless the paper profile resets
    it: every TuningIQA row trains on all image pairs ("trained for 5 epochs on all image pairs", no max_pairs),
    and every REQA row (no validation images in the random 80/20 splits) keeps its last epoch's weights, not the
    epoch of lowest training loss (the curriculum's stage changes move that loss)."""
    paper = load_params(REPO / "params" / "paper.yaml")
    tuning = [name for name in paper.experiments if paper.experiment(name).model.name == "tuningiqa"]
    assert len(tuning) >= 7
    assert {name: paper.train_config(name).max_pairs for name in tuning} == dict.fromkeys(tuning)
    ugc = [name for name in paper.experiments if paper.experiment(name).dataset == "ugc_sim"
           and paper.experiment(name).model.name in ("reqa", "backbone_mlp")]
    assert len(ugc) >= 10
    assert {name: paper.train_config(name).monitor for name in ugc} == dict.fromkeys(ugc, "last")
    default = load_params(REPO / "params.yaml")
    assert {default.train_config(n).monitor for n in ("reqa_ugc", "reqa_wo_fn_te_ugc", "baseline_ugc")} == {"last"}


@pytest.mark.parametrize("profile", ["params.yaml", "params/paper.yaml"])
def test_no_trained_row_monitors_val_images_that_its_splits_lack(profile):
    """ugc_sim's random 80/20 splits hold no val images (REQA's protocol; ``test_builders_declare_the_splits_they_write``
    builds one) and training refuses a ``val_*`` monitor there, so every row trained by gradient descent on ugc_sim
    names a monitor without val images; otherwise the profile's ``dvc repro`` would stop at that stage."""
    params = load_params(REPO / profile)
    untrained = ("niqe", "brisque")
    rows = {name: params.train_config(name).monitor for name in params.experiments
            if params.experiment(name).dataset == "ugc_sim"
            and params.experiment(name).model.name not in untrained
            and not params.experiment(name).model.name.startswith("pyiqa:")}
    assert rows
    assert {name: m for name, m in rows.items() if m.startswith("val_")} == {}
    # val_images: train leaves no val images in any split: such a row names a monitor that needs none
    merged = {name: params.train_config(name).monitor for name in params.experiments
              if params.train_config(name).val_images == "train"}
    assert {name: m for name, m in merged.items() if m.startswith("val_")} == {}


def test_paper_profile_tests_on_the_papers_splits():
    """The default profile widens the simulated test sets (>= 200 images); the paper profile must not inherit that
    (options merge key by key): each simulated dataset tests as many scenes as its builder's default split, which is
    the paper's (TuningIQA 104 of 555 scenes, PIQ23 15 of 50, SFIQA and REQA 20 %)."""
    import inspect

    from iqalab.sim.builders import BUILDERS

    paper = load_params(REPO / "params" / "paper.yaml")
    for name, cfg in paper.datasets.items():
        if cfg.source != "sim":
            continue
        default = inspect.signature(BUILDERS[cfg.builder]).parameters["test_fraction"].default
        n = cfg.options.get("n_scenes", cfg.options.get("n_images"))
        tested = round(cfg.options.get("test_fraction", default) * n)
        assert tested == round(default * n), f"{name}: {tested} of {n} tested, the paper's split has {round(default * n)}"
    assert round(paper.datasets["fglive_sim"].options["test_fraction"] * 555) == 104


def test_compose_writes_the_profile_as_a_plain_params_file(tmp_path, capsys):
    """Applying a profile for DVC: ``iqalab --params params/paper.yaml compose --out params.yaml``."""
    from iqalab.__main__ import main

    out = tmp_path / "params.yaml"
    assert main(["-q", "--params", str(REPO / "params" / "paper.yaml"), "compose", "--out", str(out)]) == 0
    text = out.read_text()
    assert "base:" not in text
    assert not [t for t in yaml.scan(text) if isinstance(t, (yaml.AnchorToken, yaml.AliasToken))]
    assert load_params(out).model_dump() == load_params(REPO / "params" / "paper.yaml").model_dump()


def test_training_refuses_a_split_the_ingested_dataset_lacks(project, toy_dataset):
    """An adapter's splits are known once ingested: the engine checks them before building anything."""
    import shutil

    from iqalab.train.engine import train_experiment

    shutil.copytree(toy_dataset.root, project.root / "build" / "datasets" / "toy")
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "splits": ["scene", "fold_*"]})
    params = parse_params(raw, check_models=False)  # as for an adapter: nothing declared before ingest
    with pytest.raises(ParamsError, match=r"experiments\.e\.splits: dataset 'toy' has no split 'fold_\*'; "
                                          r"available: \['random_00', 'random_01', 'scene'\]"):
        train_experiment(params, "e", project.root, progress=False)
    assert not (project.root / "build" / "models" / "e").exists()


def test_default_profile_test_set_sizes_are_as_documented():
    """docs/deviations.md, "Test shares": the default profile's simulated test sets hold >= 450 images each, so a
    test SRCC's 95 % CI is within +/- 0.1 even near 0 (issue 23), while the training and val sets keep the counts
    they had with 200-290 test images (fglive_sim 28 + 6 scenes, portrait_sim 36 + 6, ugc_sim 259 images, face_sim
    70 + 10 scenes as SFIQA's fold_0 had). Computed without rendering: the builders' own split functions on a frame
    of the scenes and images that ``params.yaml``'s options ask for (every builder renders ``images_per_scene``
    images of each scene and drops none; ugc_sim: one image per scene)."""
    import pandas as pd

    from iqalab.data.splits import kfold_splits, random_splits
    from iqalab.sim.builders import _scene_split, builder_options, split_names

    params = load_params(REPO / "params.yaml")

    def frame(name: str) -> tuple[pd.DataFrame, dict]:
        opts = {**builder_options(name), **params.datasets[name].options}
        if name == "ugc_sim":
            scenes = [f"u{i:05d}" for i in range(opts["n_images"])]
        else:
            scenes = [f"s{s:04d}" for s in range(opts["n_scenes"]) for _ in range(opts["images_per_scene"])]
        return pd.DataFrame({"image_id": [f"i{k:05d}" for k in range(len(scenes))], "scene": scenes}), opts

    def counts(splits: pd.DataFrame, images: pd.DataFrame) -> dict[str, tuple[int, int]]:
        """(images, scenes) per role."""
        out = {}
        for role, part in splits.groupby("role"):
            ids = images["image_id"].isin(part["image_id"])
            out[str(role)] = (int(ids.sum()), images.loc[ids, "scene"].nunique())
        return out

    expected = {"fglive_sim": {"test": (464, 58), "train": (224, 28), "val": (48, 6)},
                "portrait_sim": {"test": (464, 29), "train": (576, 36), "val": (96, 6)},
                "face_sim": {"test": (450, 75), "train": (420, 70), "val": (60, 10)}}
    for name, roles in expected.items():
        images, opts = frame(name)
        splits = _scene_split(images, opts["test_fraction"], opts["val_fraction"], params.seed)
        assert counts(splits, images) == roles, name
    assert split_names("fglive_sim") == split_names("portrait_sim") == ["scene"]

    images, opts = frame("face_sim")  # the folds are still built (SFIQA's 7:1:2), the default run tests `scene`
    folds = kfold_splits(images, n_folds=opts["n_folds"], seed=params.seed, by_scene=True)
    assert split_names("face_sim", **opts) == [f"fold_{k}" for k in range(5)] + ["scene"]
    assert {s: counts(part, images)["test"][0] for s, part in folds.groupby("split")} == \
        {"fold_0": 192, "fold_1": 192, "fold_2": 186, "fold_3": 180, "fold_4": 180}
    face = [e for e in params.experiments.values() if e.dataset == "face_sim"]
    assert face and all(e.splits == ["scene"] for e in face)

    images, opts = frame("ugc_sim")
    assert len(images) == 860
    splits = random_splits(images, n_splits=opts["n_splits"], test_fraction=opts["test_fraction"], seed=params.seed)
    assert {s: (counts(part, images)["test"][0], counts(part, images)["train"][0])
            for s, part in splits.groupby("split")} == {s: (601, 259) for s in split_names("ugc_sim", **opts)}

    paper = load_params(REPO / "params" / "paper.yaml")  # the papers' shares, whatever the default profile widens
    assert [paper.datasets[n].options.get("test_fraction") for n in ("fglive_sim", "portrait_sim", "face_sim",
                                                                       "ugc_sim")] == [0.1874, 0.3, 0.2, 0.2]
    assert all(e.splits == ["fold_*"] for e in paper.experiments.values() if e.dataset == "face_sim")
    doc = (REPO / "docs" / "deviations.md").read_text()
    for text in ("(58 of 92 scenes, 464 images;", "(29 of 71 scenes, 464 images;", "(601 of 860 images;",
                 "(75 of 155 scenes, 450 images;"):
        assert text in doc, f"docs/deviations.md no longer says {text!r}: update this test with it"


def test_every_runnable_comparison_row_has_a_paper_profile_experiment():
    """docs/baselines.md marks a paper's comparison row "runs ... own `<model>`" (or a ``pyiqa_arch``): the paper
    profile then has an experiment of that model listing the table (regression: DBCNN and HyperIQA of REQA's
    Tables I-II, HyperIQA of TuningIQA's Table 2 and SFIQA's Table II were "runs" without one)."""
    import re

    from iqalab.comparison_rows import COMPARISON_TABLES, NOT_RUN
    from iqalab.config import load_params

    params = load_params(REPO / "params" / "paper.yaml")
    by_table: dict[str, set[str]] = {}
    for exp in params.experiments.values():
        for tag in exp.tables:
            by_table.setdefault(tag, set()).add(exp.model.name)
    missing = []
    for tag, table in COMPARISON_TABLES.items():
        for row in table.rows:
            if row.kind in NOT_RUN:
                continue
            names = re.findall(r"`([a-z0-9_]+(?::[a-z0-9_]+)?)`", row.how)
            model = next((n for n in names if not n.startswith("pyiqa:")), None)
            if model is None:  # "as above with the PaQ-2-PiQ checkpoint": the row above's model
                assert row.how.startswith("as above"), row
                continue
            if model not in by_table.get(tag, set()):
                missing.append(f"{tag}: {row.label} ({model})")
    assert not missing, missing


def test_paper_profile_hyperiqa_family_loads_the_releases_resnet50_weights():
    """The HyperIQA and PIQ23 releases start from torchvision's ResNet-50 ImageNet weights; timm's default
    ``resnet50`` weights (``a1_in1k``) are another training recipe. Every paper-profile experiment of the HyperIQA
    family, the comparison rows included, names timm's copy of torchvision's (docs/deviations.md)."""
    params = load_params(REPO / "params" / "paper.yaml")
    family = {name: exp for name, exp in params.experiments.items()
              if exp.model.name in ("hyperiqa", "sem_hyperiqa", "sem_hyperiqa_co", "fhiqa")}
    assert len(family) >= 10
    backbones = {name: params.model_kwargs(name).get("backbone") for name in family}
    assert backbones == dict.fromkeys(family, "resnet50.tv_in1k")


def test_paper_profile_scene_heads_start_as_the_piq23_release():
    """PIQ23's release initialises SEM-HyperIQA's scene classifier and rescaler Kaiming-normal with zero biases
    (``model.head_init: release``); every paper-profile SEM-HyperIQA, SEM-HyperIQA-CO and FHIQA row starts so, the
    default profile from the identity rescaling (docs/deviations.md)."""
    paper = load_params(REPO / "params" / "paper.yaml")
    scene_models = ("sem_hyperiqa", "sem_hyperiqa_co", "fhiqa")
    rows = [name for name, exp in paper.experiments.items() if exp.model.name in scene_models]
    assert len(rows) >= 6
    assert {name: paper.model_kwargs(name).get("head_init") for name in rows} == dict.fromkeys(rows, "release")
    default = load_params(REPO / "params.yaml")
    assert all(default.model_kwargs(name).get("head_init", "identity") == "identity"
               for name, exp in default.experiments.items() if exp.model.name in scene_models)


def test_paper_profile_tuningiqa_runs_eq3_on_each_partition():
    """TuningIQA Eq. 3 applies each ``Phi_k`` to its partition ``M_hat_k``: every paper-profile TuningIQA row says
    ``partition_window: partition`` (docs/deviations.md); the default profile keeps the whole-map window."""
    paper = load_params(REPO / "params" / "paper.yaml")
    rows = [name for name, exp in paper.experiments.items() if exp.model.name == "tuningiqa"]
    assert len(rows) >= 7
    assert {name: paper.model_kwargs(name).get("partition_window") for name in rows} == dict.fromkeys(rows,
                                                                                                      "partition")
    default = load_params(REPO / "params.yaml")
    assert all(default.model_kwargs(name).get("partition_window", "whole") == "whole"
               for name, exp in default.experiments.items() if exp.model.name == "tuningiqa")


def test_optimizer_names_are_defined_once():
    """``train.optimizer`` takes exactly ``OPTIMIZERS``, the names read from the ``OptimizerName`` literal that DBCNN's
    ``head_optimizer`` is annotated with too (so ``check`` refuses a mistyped one there as well)."""
    import typing

    from iqalab.config import OPTIMIZERS, OptimizerName, TrainConfig
    from iqalab.models.dbcnn import DBCNN

    assert OPTIMIZERS == typing.get_args(OptimizerName) == ("adamw", "adam", "sgd")
    assert TrainConfig.model_fields["optimizer"].annotation == OptimizerName
    assert typing.get_type_hints(DBCNN.__init__)["head_optimizer"] == OptimizerName | None
    raw = toy_params(e={"dataset": "toy", "model": {"name": "backbone_mlp"}, "train": {"optimizer": "rmsprop"}})
    with pytest.raises(ParamsError, match=r"experiments\.e\.train\.optimizer.*'adamw', 'adam' or 'sgd'"):
        parse_params(raw)


def test_check_builds_models_with_what_the_engine_reads_from_the_dataset(tmp_path, capsys):
    """``iqalab check`` builds each model with a stand-in for the engine's ``dataset_kwargs``: DB-CNN's release head
    (``head: linear``) needs the dataset's MOS range, and the check refused it ("needs mos_range ... got None"), so
    ``iqalab --params params/paper.yaml check`` failed on the paper profile's DB-CNN rows. A params value still
    wins over the stand-in (a bad ``mos_range`` is named), and the paper profile checks clean."""
    from iqalab.__main__ import main

    model = {"name": "dbcnn", "backbone": "resnet18", "pretrained": False, "head": "linear",
             "head_optimizer": "sgd", "freeze_epochs": 1}
    raw = toy_params(e={"dataset": "toy", "model": model})
    assert main(["--params", str(_write(tmp_path, raw)), "check"]) == 0, capsys.readouterr().err
    model["mos_range"] = [5.0, 1.0]
    assert main(["--params", str(_write(tmp_path, raw)), "check"]) == 2
    err = capsys.readouterr().err
    assert "experiments.e.model" in err and "needs mos_range" in err, err
    assert main(["-q", "--params", str(REPO / "params" / "paper.yaml"), "check"]) == 0, capsys.readouterr().err
