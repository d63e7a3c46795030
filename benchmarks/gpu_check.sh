#!/usr/bin/env bash
# One prepared run on a GPU machine (the device tool): GPU tests, then the model benchmarks at full SciFact size.
# Needs torch, transformers, sentence-transformers there; qwen3_rag runs from the checkout (no faiss needed).
# Data travels in .carry/ (scifact corpus + queries, the Qwen tokenizer files), since ../shared does not.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, sentence_transformers as st; print(torch.__version__, transformers.__version__, st.__version__)" | tee -a "$OUT/gpu.txt"
timeout 90 python3 -m pytest tests/retrieval/test_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
timeout 330 python3 benchmarks/bench_models.py --device cuda --n-docs 5183 --n-queries 300 --rerank-queries 4 \
  --ref-rerank-batches 32,100 --out "$OUT/models-gpu.json" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/bench.txt"
# the reranker on what the default pipeline reranks: chunks (128 / 32), shared prefix on and off
timeout 120 python3 benchmarks/bench_models.py --device cuda --n-docs 2 --n-queries 8 --skip reference,st \
  --rerank-queries 4 --candidates 100 --candidate-kind chunks --ref-rerank-batches 32 \
  --out "$OUT/rerank-chunks-gpu.json" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/bench-chunks.txt"
