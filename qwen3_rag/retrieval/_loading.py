"""Finding a model, choosing device, dtype and attention, and reading sentence-transformers configs."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

Pooling = Literal["last_token", "mean", "cls"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_model_path(model: str | os.PathLike[str]) -> tuple[str, bool]:
    """Return ``(path_or_id, is_local)`` for a hub id or a local directory.

    Raises:
        ValueError: A path-like argument that does not exist, or a directory without ``config.json``.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model directory {str(path)!r} has no config.json; pass a directory written by "
                "save_pretrained (config.json, tokenizer files, model.safetensors) or a Hugging Face hub id"
            )
        return str(path.resolve()), True
    # Hub ids are "name" or "org/name"; anything else is meant as a path.
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)
    if looks_like_path or path.exists():
        raise ValueError(
            f"model {text!r} was not found: tried the local directory {str(path.resolve())!r} (missing or not "
            "a directory). Pass an existing model directory or a hub id like 'Qwen/Qwen3-Embedding-0.6B'."
        )
    return text, False


def load_config(model: str, *, revision: str | None = None) -> Any:
    """Load a transformers config, turning 'not found' into a ValueError that names what was tried."""
    from transformers import AutoConfig

    path, is_local = resolve_model_path(model)
    try:
        return AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as exc:
        if is_local:
            raise ValueError(f"could not read the model config in {path!r}: {exc}") from exc
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise ValueError(
            f"model {model!r} could not be found: it is not a local directory ({str(Path(model).resolve())!r}) "
            f"and the Hugging Face hub (or its cache under {cache}) did not provide it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Download it once with `huggingface-cli download <id>` or pass a local directory."
        ) from exc


def fingerprint(path_or_id: str, revision: str | None = None) -> str:
    """A short identity of a model: the hub id and revision, or a hash of a local directory's config and weights.

    For a local directory the weights are fingerprinted by file names and sizes plus the first and last MiB of each
    weight file, which changes whenever the weights do without reading gigabytes.
    """
    path = Path(path_or_id)
    if not path.is_dir():
        return f"{path_or_id}@{revision or 'main'}"
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        file = path / name
        if not file.is_file():
            continue
        if name.endswith((".json", ".txt", ".model")) and file.stat().st_size < 4 << 20:
            h.update(name.encode())
            h.update(file.read_bytes())
        elif name.endswith((".safetensors", ".bin", ".gguf")):
            size = file.stat().st_size
            h.update(f"{name}:{size}".encode())
            with file.open("rb") as f:
                h.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    h.update(f.read(1 << 20))
    return "sha256:" + h.hexdigest()[:32]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU (logged at INFO); an explicit device must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = torch.device("mps")
        else:
            chosen = torch.device("cpu")
        logger.info("device='auto' chose %s", chosen)
        return chosen
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for but MPS is not available; use device='cpu' or 'auto'")
    return dev


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """Measured speed of a bf16 matrix product relative to fp32 on this CPU (1.0 where bf16 is not native).

    Only CPUs with AVX512-BF16 or AMX are measured; elsewhere bf16 is emulated and always slower.
    """
    flags = _cpu_flags()
    if not ({"avx512_bf16", "amx_bf16"} & flags):
        return 1.0
    a32 = torch.randn(256, 1024)
    b32 = torch.randn(1024, 3072)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a: torch.Tensor, b: torch.Tensor) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    with torch.inference_mode():
        ratio = best(a32, b32) / max(best(a16, b16), 1e-9)
    logger.info("bf16 matmul is %.2fx fp32 on this CPU", ratio)
    return ratio


def check_dtype(dtype: str | torch.dtype) -> None:
    """Raise a ValueError for a dtype that is neither a torch dtype, ``"auto"``, nor a known name."""
    if not isinstance(dtype, torch.dtype) and dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of 'auto', {', '.join(map(repr, DTYPES))}")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, checkpoint_dtype: torch.dtype | None) -> torch.dtype:
    """Choose the compute dtype.

    ``"auto"``: on CUDA the checkpoint's own dtype when it is bf16/fp32 (bf16 otherwise: fp16 overflows in the 8B
    model); on CPU bf16 only for a bf16 checkpoint on a CPU where bf16 measured clearly faster than fp32, else fp32.
    ``dtype`` was checked with :func:`check_dtype` when the runner was made.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        if checkpoint_dtype == torch.float32:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and checkpoint_dtype == torch.bfloat16 and cpu_bf16_speedup() >= 1.5:
        logger.info("dtype='auto' chose bfloat16 on this CPU (native bf16 measured faster)")
        return torch.bfloat16
    return torch.float32


def attention_implementation(device: torch.device, dtype: torch.dtype, requested: str | None) -> str:
    """flash_attention_2 on CUDA with bf16/fp16 when flash-attn is installed, else sdpa."""
    if requested is not None:
        return requested
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        from qwen3_rag._optional import is_available

        if is_available("flash_attn"):
            return "flash_attention_2"
    return "sdpa"


def checkpoint_dtype(config: Any) -> torch.dtype | None:
    # transformers >= 4.56 names it dtype (torch_dtype is then a property that warns); older ones torch_dtype
    value = getattr(config, "dtype", None) or vars(config).get("torch_dtype")
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        return DTYPES.get(value)
    return None


@dataclass(frozen=True)
class SentenceTransformersInfo:
    """What a sentence-transformers model directory says about pooling and normalisation."""

    pooling: Pooling
    normalize: bool
    max_seq_length: int | None
    include_prompt: bool = True


def read_sentence_transformers_config(path: str) -> SentenceTransformersInfo | None:
    """Read ``modules.json`` + the Pooling module's ``config.json``; ``None`` when the directory has none."""
    root = Path(path)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling: Pooling | None = None
    include_prompt = True
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg_file = root / module.get("path", "") / "config.json"
            cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
            if cfg.get("pooling_mode_lasttoken"):
                pooling = "last_token"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_mean_tokens", True):
                pooling = "mean"
            other = [k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                 "pooling_mode_weightedmean_tokens") if cfg.get(k)]
            if other:
                raise ValueError(f"{cfg_file}: pooling modes {other} are not supported (mean, cls, last token are)")
            include_prompt = bool(cfg.get("include_prompt", True))
        elif kind.endswith("Normalize"):
            normalize = True
    max_seq_length = None
    st_file = root / "sentence_bert_config.json"
    if st_file.is_file():
        max_seq_length = json.loads(st_file.read_text(encoding="utf-8")).get("max_seq_length")
    if pooling is None:
        return None
    return SentenceTransformersInfo(pooling, normalize, max_seq_length, include_prompt)
