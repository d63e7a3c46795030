"""Finding a model, choosing device, dtype and attention, and reading sentence-transformers configs."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import mmap
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


#: Weight files that are Python pickles: loading one can run code, so they are never loaded.
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weight_files(path: str) -> None:
    """Refuse a local model directory whose weights are not in safetensors files.

    Raises:
        ValueError: naming the pickled weight file and how to convert it, or saying that no weights were found.
    """
    root = Path(path)
    names = sorted(os.listdir(root))
    if any(name.endswith(".safetensors") for name in names):
        return
    pickled = [name for name in names if name.endswith(PICKLE_WEIGHTS) and (root / name).is_file()]
    if pickled:
        raise ValueError(
            f"the weights of {str(root)!r} are in {str(root / pickled[0])!r}, a pickled PyTorch file, which "
            "qwen3-rag does not load (unpickling can run code). Convert the model to safetensors once, where you "
            "trust the file: AutoModel.from_pretrained(dir).save_pretrained(dir) writes model.safetensors"
        )
    raise ValueError(f"model directory {str(root)!r} holds no weights (*.safetensors); files: {names}")


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


#: The fingerprint of a local model: SHA-256 over every byte of its config, tokenizer and weight files.
FINGERPRINT_SCHEME = "sha256-all"
#: The scheme before it, which read only the first and last MiB of each weight file.
LEGACY_FINGERPRINT_SCHEME = "sha256"
_TEXT_FILES = (".json", ".txt", ".model")
_WEIGHT_FILES = (".safetensors", ".bin", ".gguf")
#: Weight files are hashed in blocks of this size, on several threads (hashlib releases the GIL).
_HASH_BLOCK = 64 << 20
_fingerprints: dict[tuple[Any, ...], str] = {}
_fingerprints_lock = threading.Lock()


def fingerprint(path_or_id: str, revision: str | None = None) -> str:
    """A short identity of a model: the hub id and revision, or a hash of everything in a local directory that
    defines the model's output.

    A local directory gives ``"sha256-all:<hex>"``, a SHA-256 over the names and every byte of its config and
    tokenizer files (``.json .txt .model``) and weight files (``.safetensors .bin .gguf``; each hashed in 64 MiB
    blocks on several threads, the block digests hashed in order). It is computed once per process for a
    directory whose files keep their names, sizes, inodes, modification and change times (BENCHMARKS.md,
    "Model fingerprint", has the cost).
    """
    path = Path(path_or_id)
    if not path.is_dir():
        return f"{path_or_id}@{revision or 'main'}"
    files = _model_files(path)
    # st_ctime changes with any write or metadata change and cannot be set back, unlike st_mtime
    stamps = tuple((f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for f, st in files)
    key = (str(path.resolve()), stamps)
    with _fingerprints_lock:
        cached = _fingerprints.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for file, _st in files:
        h.update(file.name.encode("utf-8", "surrogateescape") + b"\x00")
        h.update(_file_digest(file))
    value = f"{FINGERPRINT_SCHEME}:{h.hexdigest()[:32]}"
    with _fingerprints_lock:
        _fingerprints[key] = value
    return value


def fingerprint_matches(stored: str, path_or_id: str, revision: str | None = None) -> bool:
    """Whether a fingerprint recorded earlier names this model, whichever scheme recorded it.

    An index made before :data:`FINGERPRINT_SCHEME` records the legacy ``"sha256:<hex>"`` form; it is compared
    with the legacy formula (first and last MiB of each weight file), so such an index keeps opening with its
    own model, with the legacy scheme's weaker check.
    """
    if stored.startswith(LEGACY_FINGERPRINT_SCHEME + ":") and Path(path_or_id).is_dir():
        return stored == legacy_fingerprint(path_or_id)
    return stored == fingerprint(path_or_id, revision)


def legacy_fingerprint(path: str) -> str:
    """The fingerprint earlier versions recorded for a local directory: small config files, and the names, sizes
    and first and last MiB of the weight files."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        file = Path(path) / name
        if not file.is_file():
            continue
        if name.endswith(_TEXT_FILES) and file.stat().st_size < 4 << 20:
            h.update(name.encode())
            h.update(file.read_bytes())
        elif name.endswith(_WEIGHT_FILES):
            size = file.stat().st_size
            h.update(f"{name}:{size}".encode())
            with file.open("rb") as f:
                h.update(f.read(1 << 20))
                if size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    h.update(f.read(1 << 20))
    return f"{LEGACY_FINGERPRINT_SCHEME}:{h.hexdigest()[:32]}"


def _model_files(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The files of a model directory that define its output, sorted by name, with their stat."""
    out = []
    for name in sorted(os.listdir(path)):
        file = path / name
        if name.endswith(_TEXT_FILES + _WEIGHT_FILES) and file.is_file():
            out.append((file, file.stat()))
    return out


def _file_digest(file: Path) -> bytes:
    """SHA-256 of the SHA-256 digests of the file's consecutive 64 MiB blocks (one block: of its digest)."""
    size = file.stat().st_size
    if size == 0:
        return hashlib.sha256().digest()
    with file.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            starts = range(0, size, _HASH_BLOCK)
            workers = min(len(starts), os.cpu_count() or 1, 8)

            def block(start: int) -> bytes:
                return hashlib.sha256(view[start:start + _HASH_BLOCK]).digest()

            if workers > 1:
                with ThreadPoolExecutor(workers) as pool:
                    digests = list(pool.map(block, starts))
            else:
                digests = [block(start) for start in starts]
        finally:
            view.release()
    return hashlib.sha256(b"".join(digests)).digest()


def available_cpus() -> int:
    """The CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (a container limited
    to 2 CPUs on a 64-core host reports 64 cores to ``os.cpu_count()``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None without a limit."""
    try:
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            return int(parts[0]) / int(parts[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def limit_cpu_threads() -> None:
    """Keep torch's intra-op threads within the cores this process may use, unless the user chose a number
    (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``): more threads than cores only make them wait for each other, which
    costs most when other work shares the cores (BENCHMARKS.md, "1. Embedding")."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return
    cores = available_cpus()
    if torch.get_num_threads() > cores:
        logger.info("using %d torch threads, the cores this process may use (torch chose %d)", cores,
                    torch.get_num_threads())
        torch.set_num_threads(cores)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU (logged at INFO); an explicit device must exist.

    Raises:
        ValueError: for a string that names no device (``"tpu9"``) or a device this machine lacks.
    """
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
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU number) or 'mps'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
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
