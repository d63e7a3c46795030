#!/usr/bin/env bash
# Prepared runs on a GPU machine (the device tool), each under the 10-minute limit of one command; a session has
# 15 minutes of device time in all, start-up included, so run them in this order and stop when time runs short:
#   bash benchmarks/gpu_check.sh models    # GPU tests + embedding / reranking benchmarks at full SciFact size (~6 min)
#   bash benchmarks/gpu_check.sh more      # reranking chunks (shared prefix on / off), ingestion pipelined on / off
#                                          # (~4 min)
#   bash benchmarks/gpu_check.sh compile   # eager vs whole-model vs per-layer torch.compile (~4 min)
# Needs torch, transformers, sentence-transformers there; qwen3_rag runs from the checkout. Data travels in .carry/
# (scifact corpus + queries, the Qwen tokenizer files), since ../shared does not; faiss-cpu, bm25s and PyStemmer
# are not on the device image, so their wheels travel in .carry/wheels
# (pip download faiss-cpu bm25s PyStemmer --no-deps --python-version 3.12 --only-binary=:all: ...).
set -uo pipefail
STAGE=${1:-models}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, sentence_transformers as st; print(torch.__version__, transformers.__version__, st.__version__)" | tee -a "$OUT/gpu.txt"
quiet() { grep -v "Loading weights\|Writing model"; }

if [ "$STAGE" = models ]; then
  timeout 90 python3 -m pytest tests/retrieval/test_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
  timeout 330 python3 benchmarks/bench_models.py --device cuda --n-docs 5183 --n-queries 300 --rerank-queries 4 \
    --ref-rerank-batches 32,100 --out "$OUT/models-gpu.json" 2>&1 | quiet | tee "$OUT/bench.txt"
fi

if [ "$STAGE" = more ]; then
  ls .carry/wheels/*.whl >/dev/null 2>&1 && pip install -q --no-index --no-deps .carry/wheels/*.whl 2>&1 | tail -2
  # the reranker on what the default pipeline reranks: chunks (128 / 32), shared prefix on and off
  timeout 100 python3 benchmarks/bench_models.py --device cuda --n-docs 2 --n-queries 8 --skip reference,st \
    --rerank-queries 4 --candidates 100 --candidate-kind chunks --ref-rerank-batches 32 \
    --out "$OUT/rerank-chunks-gpu.json" 2>&1 | quiet | tee "$OUT/bench-chunks.txt"
  # ingestion with the model on the GPU: embedding beside chunking (the CUDA default) and one after the other
  for mode in on off; do
    timeout 120 python3 benchmarks/bench_ingest.py --device cuda --embedder qwen3-0.6b-random --n-docs 0 \
      --pipeline $mode --out "$OUT/ingest-gpu-$mode.json" 2>&1 | quiet | tail -12 | tee "$OUT/ingest-$mode.txt"
  done
fi

if [ "$STAGE" = compile ]; then
  timeout 280 python3 benchmarks/gpu_compile.py 2>&1 | quiet | tee "$OUT/compile.txt"
fi
