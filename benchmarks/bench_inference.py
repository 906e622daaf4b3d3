"""Inference benchmark: ``iqalab score`` (batched Scorer) against a plain eager loop over PIL images, with one and
two torch threads in one run, and where the time goes.

Both score the same files with the same freshly built model. The reference decodes each file with PIL, resizes it
(plain bicubic), normalises it with torchvision-style per-image ops and runs the model on one image at a time, as a
quick script would. ``iqalab score`` decodes in threads ahead of the model (Pillow releases the GIL while it
decodes and resizes, so this overlaps even when torch uses one thread), prepares each file exactly as the training
cache did (``prepare_image``) and scores batches; with ``--format jpeg`` it is also timed with ``--draft`` (JPEG
decoded at reduced DCT scale, within a stated tolerance of the training pixels), and on a CPU with native bf16
(AMX or AVX512_BF16) or CUDA with ``--amp`` (bf16 autocast, channels_last; within a stated tolerance of the fp32
scores). For each torch thread count (``torch.set_num_threads``; ``--threads``) the sides alternate for
``--rounds`` rounds and the medians are compared, so a machine shared with other jobs loads both alike; each
ratio is against the reference with the same thread count. Before the timings, one line per thread count splits one image's cost into decode, ``prepare_image``
and the model (batch 1 and the scoring batch): with one thread a model-bound run can gain at most
(decode + prepare + model at batch 1) / (model at batch B), decoding being overlapped. The load average is printed
before and after. Run:

    .venv/bin/python benchmarks/bench_inference.py [--images 32] [--size 512] [--format png|jpeg] [--rounds 3]
        [--threads 1 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqalab.data.cache import decode_image, prepare_image
from iqalab.data.loaders import IMAGENET_MEAN, IMAGENET_STD, normalise_batch, to_chw_uint8
from iqalab.data.toy import build_toy
from iqalab.models import build_model, get_model_class
from iqalab.stages.score import score_images
from iqalab.train.engine import cpu_native_bf16, save_checkpoint

log = logging.getLogger("bench_inference")


def best_ms(run: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of ``repeats`` timings of ``run`` in milliseconds (the least disturbed by other jobs)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="side of the image files")
    parser.add_argument("--format", default="png", choices=["png", "jpeg"], help="file format of the images")
    parser.add_argument("--cache", type=int, default=224, help="working resolution of the model")
    parser.add_argument("--model", default="backbone_mlp")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are compared")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    attributes = ["overall", "sharpness", "noise"]
    kwargs = dict(getattr(get_model_class(args.model), "smoke_params", {}))
    if args.model == "backbone_mlp":
        kwargs = {"backbone": "resnet18"}
    model = build_model(args.model, attributes, **kwargs).eval().to(device)
    load_before = os.getloadavg()
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_scenes = max(2, -(-args.images // 8))  # the toy's scene split needs two scenes
        build_toy(root / "ds", n_scenes=n_scenes, per_scene=-(-args.images // n_scenes), size=args.size,
                  n_random_splits=1)
        files = sorted((root / "ds" / "images").glob("*.png"))
        if args.format == "jpeg":  # camera-like files: JPEG, quality 90
            for path in files:
                Image.open(path).convert("RGB").save(path.with_suffix(".jpg"), quality=90)
                path.unlink()
            files = sorted((root / "ds" / "images").glob("*.jpg"))
        ckpt = root / "best.pt"
        save_checkpoint(ckpt, {"model": model.state_dict(), "config": {
            "model_name": args.model, "model_kwargs": kwargs, "attributes": attributes, "mos_range": [1.0, 5.0],
            "cache_size": args.cache, "eval_crop": None}})
        mean = torch.from_numpy(IMAGENET_MEAN)[:, None, None].to(device)
        std = torch.from_numpy(IMAGENET_STD)[:, None, None].to(device)
        with torch.no_grad():  # warm-up: CUDA context and kernels, so neither side pays them
            model({"image": torch.zeros(1, 3, args.cache, args.cache, device=device)})

        def reference() -> None:
            with torch.no_grad():
                for path in files:
                    img = Image.open(path).convert("RGB").resize((args.cache, args.cache), Image.Resampling.BICUBIC)
                    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).to(device)
                    out = model({"image": ((x - mean) / std)[None]})
                    [float(v) for v in out.values()]  # results to the host, as a script that prints them would

        def score(draft: bool = False, amp: bool = False) -> None:
            score_images(ckpt, files, root / "scores.csv", batch_size=args.batch_size, device=args.device,
                         progress=False, draft=draft, amp=amp)

        sides: dict[str, Callable[[], None]] = {"reference eager loop (PIL, batch 1)": reference,
                                                "iqalab score (batched Scorer)": score}
        if args.format == "jpeg":
            sides["iqalab score --draft"] = lambda: score(draft=True)
        amp = device.type == "cuda" or cpu_native_bf16() is not None
        if amp:
            sides["iqalab score --amp"] = lambda: score(amp=True)
            if args.format == "jpeg":
                sides["iqalab score --draft --amp"] = lambda: score(draft=True, amp=True)
            fast = build_model(args.model, attributes, **kwargs).eval().to(device)
            fast.load_state_dict(model.state_dict())
            fast.to(memory_format=torch.channels_last)

            def bf16(images: torch.Tensor) -> object:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return fast({"image": normalise_batch(images.to(device)).contiguous(
                        memory_format=torch.channels_last)})
        decoded = decode_image(files[0])
        prepared = prepare_image(decoded, args.cache)
        batch = torch.stack([to_chw_uint8(prepared)] * args.batch_size)
        for threads in args.threads:
            torch.set_num_threads(threads)
            with torch.no_grad():
                parts = {"decode": best_ms(lambda: decode_image(files[0])),
                         "prepare_image": best_ms(lambda: prepare_image(decoded, args.cache)),
                         "model batch 1": best_ms(lambda: model({"image": normalise_batch(batch[:1].to(device))})),
                         f"model batch {args.batch_size}": best_ms(
                             lambda: model({"image": normalise_batch(batch.to(device))})) / args.batch_size}
                if amp:
                    parts[f"model batch {args.batch_size} bf16"] = best_ms(lambda: bf16(batch)) / args.batch_size
            lines.append(f"torch_threads={threads} one image: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
            rates: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, run in sides.items():
                    start = time.perf_counter()
                    run()
                    rates[name].append(len(files) / (time.perf_counter() - start))
            medians = {name: statistics.median(values) for name, values in rates.items()}
            ref = next(iter(medians.values()))
            for name, rate in medians.items():
                spread = ", ".join(f"{v:.2f}" for v in rates[name])
                lines.append(f"torch_threads={threads} {name:38s} {rate:7.2f} images/s (median of {spread}); "
                             f"ratio {rate / ref:.2f}x")
    print(f"model={args.model} images={len(files)} files={args.size}px {args.format} input={args.cache}px "
          f"batch={args.batch_size} device={torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} "
          f"cores={os.cpu_count()} rounds={args.rounds} load average (1, 5, 15 min) before "
          f"{', '.join(f'{v:.1f}' for v in load_before)}, after {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
