#!/usr/bin/env bash
# LLM checks for a lent GPU machine (issue #16): a Llama-shaped model of ~1.1 B parameters with random
# weights in bf16 (TinyLlama's shape: hidden 2048, 24 layers, 32 heads / 8 KV heads, MLP 5632; the vocab is
# the locally trained tokenizer's, so embeddings are small): unsplit engine vs transformers generate,
# 8 sessions vs 1, 2-stage split vs unsplit, tensor-wire hop (GPU -> host -> GPU). Then the small fp32 model
# on the GPU, whose greedy tokens must equal transformers' (exit 1 otherwise). Needs the venv with .[dev].
# Not yet run on a GPU: no device was lent to the task that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" bench/llm_engine.py --device cuda --dtype bfloat16 --hidden 2048 --layers 24 --heads 32 --kv-heads 8 \
  --intermediate 5632 --init-std 0.02 --tokens 128 --rounds 3 --threads 4
"$PY" bench/llm_engine.py --device cuda --dtype float32 --tokens 64 --rounds 2 --threads 4
