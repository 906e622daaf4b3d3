#!/usr/bin/env bash
# The GPU checks in one prepared run; writes $OUT/gpu_checks.log (README, "Benchmarks"). Each step has its own time
# limit and a failure does not stop the next. `bash benchmarks/gpu_checks.sh [all|issue15|issue30]`: issue #15's
# steps (training-step modes, inference, CUDA tests; about 6 min on an H200), issue #30's (training with the real
# loader against the model alone and MFU, `iqalab score` on JPEGs with --amp; about 7 min), or both (default). Run it from the repository root with a python3 that
# has PyTorch + CUDA, timm, pandas, pyarrow, scipy, scikit-learn, scikit-image and pydantic (no install of iqalab
# needed: src/ goes on PYTHONPATH). On a machine without pydantic, bring its wheels, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#       pydantic pydantic-core annotated-types typing-inspection
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -u
WHICH=${1:-all}
OUT=${OUT:-/tmp/gpu-checks}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
step() { echo; echo "=== $1 ($(date +%T))"; }
{
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
  if [ "$WHICH" != issue30 ]; then
  step "training step, default profile models, 224 px, batch 32"
  timeout 150 python3 benchmarks/bench_train_step.py --size 224 --batch 32 --steps 10 --warmup 3 \
    --compile backbone_mlp
  step "training step, paper profile models (papers' backbones), 224 px, batch 32"
  timeout 170 python3 benchmarks/bench_train_step.py --params params/paper.yaml --size 224 --batch 32 --steps 10 \
    --warmup 3 --models backbone_mlp tuningiqa hyperiqa reqa sfiqa_s --compile tuningiqa
  step "inference: iqalab score vs eager PIL loop"
  timeout 60 python3 benchmarks/bench_inference.py --images 512 --device cuda --batch-size 64 --model backbone_mlp
  step "engine and DDP tests with CUDA visible (training on cuda:0, AMP + channels_last)"
  timeout 110 python3 -m pytest -q -p no:cacheprovider -x tests/test_engine.py tests/test_distributed.py
  fi
  if [ "$WHICH" != issue15 ]; then
  step "issue #30: paper-profile training with the real loader vs the model alone, MFU (epoch 2 of 2 timed)"
  timeout 400 python3 benchmarks/bench_train_loader.py --epochs 2 --out "$OUT/train_loader.json"
  step "issue #30: iqalab score vs eager PIL loop, JPEG files, --amp"
  timeout 75 python3 benchmarks/bench_inference.py --images 512 --device cuda --batch-size 64 --format jpeg \
    --rounds 2 --threads 16
  fi
  step "done"
} 2>&1 | tee "$OUT/gpu_checks.log"
