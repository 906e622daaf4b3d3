"""Command line: ``iqalab <stage> ...`` runs the same library code as the notebooks. A stage has one name, the
same here, in ``dvc.yaml`` and in its notebook ``notebooks/NN_<stage>.ipynb``.

    iqalab ingest fglive_sim          build one dataset (tables + cache)
    iqalab train tuningiqa_fglive     train one experiment
    torchrun --standalone --nproc_per_node=N -m iqalab train EXP   the same on N GPUs (DDP)
    iqalab profile [experiment ...]   params, GMACs at 224^2 and CPU latency of trained models
    iqalab evaluate                   tables and metrics from all predictions
    iqalab cross_dataset              models trained on one dataset predict another (REQA / SFIQA Table IV)
    iqalab gmad                       gMAD competition between trained models
    iqalab camera_tuning              models pick camera settings; panel win rates and regret
    iqalab significance               which differences between models are statistically real
    iqalab annotation_stats fglive_sim  annotation statistics of one dataset
    iqalab score --checkpoint C IMG.. per-attribute scores of your own images as CSV
    iqalab score --model niqe IMG..   published NIQE / BRISQUE / pyiqa:<metric> scores, no checkpoint
    iqalab score --model official:hyperiqa --option weights=koniq_pretrained.pkl IMG..   the original's weights
    iqalab models [--write F]         list the registered models (model cards)
    iqalab report                     results/report.md from every stage's outputs
    iqalab data fetch koniq10k        download a benchmark into data/raw/ (or print the manual steps)
    iqalab data status                every dataset: present / partial / missing
    iqalab weights fetch [paper]      pretrained backbones of a profile into the hub cache (then HF_HUB_OFFLINE=1)
    iqalab weights status [paper]     which of them are cached
    iqalab export EXP [--out DIR]     a trained model as a folder for `score --checkpoint DIR` / a model hub
    iqalab check                      validate params.yaml
    iqalab --params params/paper.yaml compose --out params.yaml   apply a profile (an overlay of params.yaml)
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqalab.io import workdir
from iqalab.memory import keep_freed_memory


def _options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``--option`` as keyword arguments (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"iqalab score: --option {pair!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _params(args: argparse.Namespace):  # noqa: ANN202
    from iqalab.config import load_params

    return load_params(args.params or os.environ.get("IQALAB_PARAMS"))


def _params_file(args: argparse.Namespace) -> str | None:
    return args.params or os.environ.get("IQALAB_PARAMS")


def _stage_params(args: argparse.Namespace):  # noqa: ANN202
    """The params of a stage command: as :func:`_params`, with the name checks run once per params and code
    (:func:`iqalab.notebook.load_checked`, as the notebooks do); ``iqalab check`` always runs them."""
    from iqalab.io import project_root
    from iqalab.notebook import load_checked

    return load_checked(Path(_params_file(args) or project_root() / "params.yaml"), _root(args))


def _root(args: argparse.Namespace) -> Path:
    """The work folder: ``$IQALAB_WORKDIR``, else the project root, or for a params file other than the project's
    its own ``build/work/<name>/`` (:func:`iqalab.io.workdir`; the committed ``results/`` are never overwritten
    by test or profile params)."""
    folder = workdir(_params_file(args))
    if not os.environ.get("IQALAB_WORKDIR") and folder != workdir():
        logging.getLogger("iqalab").info("params %s is not the project's params.yaml: outputs go to %s "
                                         "(IQALAB_WORKDIR=<folder> chooses another)", _params_file(args), folder)
    return folder


def _known_experiments(args: argparse.Namespace) -> list[str] | None:
    """The experiments of the params file, to name beside an unknown one (``None`` when it cannot be read: the
    command then says only that the experiment is not trained)."""
    try:
        return list(_params(args).experiments)
    except (ValueError, OSError) as exc:
        logging.getLogger("iqalab").debug("no experiment names from the params file: %s", exc)
        return None


def _positive_mib(text: str) -> float:
    """argparse type: a finite number of MiB > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of MiB") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {text}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _check_device(flag: str, device: str) -> None:
    """Refuse ``<flag> cuda`` on a machine without a CUDA device, naming the flag."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"{flag} cuda: no CUDA device is available here (use {flag} cpu or auto)")


def _silence_progress_bars() -> None:
    """``-q``: no tqdm bar anywhere. ``TQDM_DISABLE`` reaches child processes (tqdm reads it when it is first
    imported); bars of this process, where tqdm may be imported already, default to ``disable=True``."""
    os.environ["TQDM_DISABLE"] = "1"
    from functools import partialmethod

    from tqdm import std

    if not getattr(std.tqdm, "_iqalab_quiet", False):
        std.tqdm.__init__ = partialmethod(std.tqdm.__init__, disable=True)  # type: ignore[method-assign]
        std.tqdm._iqalab_quiet = True  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iqalab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=None, help="params.yaml to use (default: the project root's)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (any stage, also in child processes), warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="build a dataset's canonical tables and image cache")
    p.add_argument("dataset")
    p = sub.add_parser("train", help="train an experiment")
    p.add_argument("experiment")
    p = sub.add_parser("profile", help="params, GMACs and latency of trained experiments' models")
    p.add_argument("experiments", nargs="*", help="default: every experiment in params.yaml")
    sub.add_parser("evaluate", help="tables and metrics from all predictions")
    sub.add_parser("cross_dataset", help="trained models predict every image of another dataset (Table IV)")
    sub.add_parser("significance", help="F-test matrix, paired tests and bootstrap CIs between models")
    sub.add_parser("gmad", help="gMAD competition between every pair of trained models")
    sub.add_parser("camera_tuning", help="let each model tune the simulated camera; panel win rates and regret")
    p = sub.add_parser("annotation_stats", help="annotation statistics of a dataset")
    p.add_argument("dataset")
    p = sub.add_parser("score",
                       help="score your own images with a trained checkpoint or a model needing none",
                       description="Score image files: the table is printed to stdout and written to --out "
                                   "(default scores.csv, replaced if present).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint",
                       help="a training checkpoint (build/models/<experiment>/<split>/best.pt) or a folder "
                            "written by `iqalab export`; one score per attribute in the training MOS units, "
                            "plus the raw score of NIQE/BRISQUE (raw_niqe, raw_brisque: lower is better)")
    which.add_argument("--model", help="a model that needs no checkpoint: niqe, brisque (the original LIVE "
                                       "models; raw scores, lower is better), pyiqa:<metric>, or "
                                       "official:hyperiqa (the original's released weights, --option "
                                       "weights=<file>, scored by its test protocol); writes its published score")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model keyword for --model only (YAML value), e.g. --option patch_size=64")
    p.add_argument("--out", default="scores.csv",
                   help="CSV to write (default scores.csv, replaced if present; checked before scoring); the "
                        "scores are also printed to stdout")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=_positive_int, default=None, help="decoding threads (default: up to 4)")
    p.add_argument("--prefetch-mb", type=_positive_mib, default=None, metavar="MIB",
                   help="bound on the decoded images held at once, ahead of and in the batch being scored "
                        "(default $IQALAB_PREFETCH_MB, else 512); a larger image is still scored, alone")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 2 when any file cannot be scored (default: only when none can)")
    p.add_argument("--detect-regions", action="store_true",
                   help="find person/face boxes as ingest does, for models that read them (TuningIQA, SFIQA)")
    p.add_argument("--allow-missing-regions", action="store_true",
                   help="score a model that reads person/face boxes without them (its fallback; column regions)")
    p.add_argument("--allow-missing-camera", action="store_true",
                   help="score a model that reads camera parameters (TuningIQA's GCPF) with all seven unknown "
                        "(column camera)")
    p.add_argument("--draft", action="store_true",
                   help="with --checkpoint: decode large JPEGs at reduced scale (faster; within a stated "
                        "tolerance of the training pixels instead of exactly them)")
    p.add_argument("--amp", action="store_true",
                   help="score under bf16 autocast (CUDA, or a CPU with AMX or AVX512_BF16): faster, scores within a stated "
                        "tolerance of the fp32 ones (column precision)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p = sub.add_parser("models", help="list registered models (model cards)")
    p.add_argument("--write", default=None, help="write the cards as Markdown (e.g. docs/models.md)")
    p.add_argument("--config", default="smoke", choices=["smoke", "default"])
    sub.add_parser("report", help="results/report.md: every table and figure in the papers' order")
    sub.add_parser("check", help="validate params.yaml")
    p = sub.add_parser("data", help="fetch published benchmarks into data/raw/; status of every dataset")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("fetch", help="download and unpack a benchmark (or print the manual steps)")
    q.add_argument("dataset")
    q.add_argument("--downloads", default=None, help="archive folder (default $IQALAB_DOWNLOADS or ~/.cache)")
    data_sub.add_parser("status", help="every dataset: present / partial / missing, with what is missing")
    p = sub.add_parser("weights", help="pretrained backbones a params profile needs: fetch into the hub cache, status")
    weights_sub = p.add_subparsers(dest="weights_command", required=True)
    for verb, text in (("fetch", "download them (then run jobs with HF_HUB_OFFLINE=1)"), ("status", "what is cached")):
        q = weights_sub.add_parser(verb, help=text)
        q.add_argument("profile", nargs="?", default=None, help="params profile (paper) or file (default: --params)")
    p = sub.add_parser("export", help="a trained experiment as a self-contained folder (safetensors, config, "
                                      "model card) that `score --checkpoint <folder>` reads")
    p.add_argument("experiment", help="an experiment of params.yaml that has been trained (`iqalab train "
                                      "<experiment>`)")
    p.add_argument("--split", default=None,
                   help="the trained split whose best.pt is exported (default: full_train when trained, else "
                        "the first split)")
    p.add_argument("--out", default=None,
                   help="folder to write (default build/export/<experiment>); an earlier export there is "
                        "replaced, any other file or non-empty folder is refused")
    p = sub.add_parser("compose", help="the params file (--params) with its base merged in, validated, as YAML")
    p.add_argument("--out", default=None, help="file to write (default: print); e.g. params.yaml to apply a profile")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # opt-in (IQALAB_KEEP_FREED_MEMORY=1): batches reuse freed memory (iqalab.memory)
    progress = not args.quiet
    if args.quiet:  # every tqdm bar, also those without a progress switch
        _silence_progress_bars()
    try:
        if args.command == "ingest":
            from iqalab.stages import ingest

            ingest.run(_stage_params(args), args.dataset, _root(args), progress=progress)
        elif args.command == "train":
            from iqalab.stages import train
            from iqalab.train import distributed

            try:  # under torchrun: one process per GPU (or CPU process, gloo), see iqalab.train.distributed
                train.run(_stage_params(args), args.experiment, _root(args), progress=progress)
            finally:
                distributed.shutdown()
        elif args.command == "profile":
            from iqalab.stages import profile

            profile.run(_stage_params(args), _root(args), args.experiments or None)
        elif args.command == "evaluate":
            from iqalab.stages import evaluate

            evaluate.run(_stage_params(args), _root(args))
        elif args.command == "cross_dataset":
            from iqalab.stages import cross_dataset

            cross_dataset.run(_stage_params(args), _root(args))
        elif args.command == "gmad":
            from iqalab.stages import gmad

            gmad.run(_stage_params(args), _root(args), progress=progress)
        elif args.command == "camera_tuning":
            from iqalab.stages import camera_tuning

            camera_tuning.run(_stage_params(args), _root(args), progress=progress)
        elif args.command == "significance":
            from iqalab.stages import significance

            significance.run(_stage_params(args), _root(args))
        elif args.command == "annotation_stats":
            from iqalab.stages import annotation_stats

            annotation_stats.run(_stage_params(args), args.dataset, _root(args))
        elif args.command == "score":
            from iqalab.stages.score import failed_files, score_images

            _check_device("--device", args.device)
            frame = score_images(args.checkpoint, args.images, args.out, args.batch_size, args.device, progress,
                                 workers=args.workers, model=args.model, options=_options(args.option),
                                 detect_regions=args.detect_regions,
                                 allow_missing_regions=args.allow_missing_regions, draft=args.draft,
                                 allow_missing_camera=args.allow_missing_camera, amp=args.amp,
                                 prefetch_mb=args.prefetch_mb)
            # a failed file's reason goes to stderr once (below) and to the CSV's error column, not this table
            print(frame.drop(columns="error", errors="ignore").to_string(index=False))
            failed = failed_files(frame)
            for path, reason in failed.itertuples(index=False):
                print(f"iqalab score: not scored: {path}: {reason.removeprefix(path + ': ')}", file=sys.stderr)
            if args.strict and len(failed):
                print(f"iqalab score: error: {len(failed)} of {len(frame)} images could not be scored (--strict); "
                      f"first: {failed['error'].iloc[0]}", file=sys.stderr)
                return 2
        elif args.command == "models":
            from iqalab.models.cards import model_cards, write_model_cards

            if args.write:
                print(write_model_cards(args.write, config=args.config))
            else:
                cards = model_cards(config=args.config)
                print(cards[["model", "inputs", "params", "gmacs", "paper"]].to_string(index=False))
        elif args.command == "report":
            from iqalab.report import build_report

            print(build_report(_stage_params(args), _root(args)))
        elif args.command == "data":
            from iqalab.data import fetch as fetching
            from iqalab.io import project_root

            root = project_root()
            if args.data_command == "status":
                datasets = _params(args).datasets if (args.params or (root / "params.yaml").is_file()) else {}
                print(fetching.status_table(fetching.status_rows(datasets, root), root))
            else:
                src = fetching.source(args.dataset)
                if src.archives:
                    print(f"{src.title} is in {fetching.fetch(src.name, root / 'data' / 'raw', args.downloads, progress)}")
                if src.manual:
                    print(("Still to do by hand:\n" if src.archives else f"{src.title} needs a manual step:\n")
                          + fetching.manual_text(src))
                print(fetching.next_steps(src))
        elif args.command == "weights":
            from iqalab import weights
            from iqalab.config import load_params

            path = weights.profile_params(args.profile)
            params = load_params(path) if path is not None else _params(args)
            needed = weights.needed_backbones(params)
            if args.weights_command == "fetch":
                for file in weights.fetch_weights(list(needed)):
                    print(f"cached {file}")
            print(weights.status_text(weights.weights_status(needed)))
        elif args.command == "export":
            from iqalab.export import export_experiment, exported_split

            folder = export_experiment(_root(args), args.experiment, args.out, split=args.split,
                                       known=_known_experiments(args))
            print(f"exported {args.experiment} (split {exported_split(folder)}) to {folder}")
        elif args.command == "check":
            from iqalab.config import check_models_build

            params = _params(args)
            check_models_build(params, _params_file(args) or "params.yaml")
            print(f"params OK: {len(params.datasets)} datasets, {len(params.experiments)} experiments")
        elif args.command == "compose":
            from iqalab.config import compose_params, dump_params
            from iqalab.io import project_root, write_text

            source = args.params or os.environ.get("IQALAB_PARAMS") or project_root() / "params.yaml"
            _params(args)  # validated before anything is written
            text = dump_params(compose_params(source))
            if args.out:
                write_text(Path(args.out), f"# composed by `iqalab compose` from {source}\n{text}")
            else:
                print(text, end="")
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        # one line naming the culprit (DataError, ParamsError, CheckpointError are ValueError/RuntimeError)
        print(f"iqalab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
