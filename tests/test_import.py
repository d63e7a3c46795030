import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, qwen3_rag; "
        "heavy = [m for m in ('langchain_core', 'langchain', 'llama_index', 'vllm', 'fastapi', 'ray', 'pymilvus', "
        "'faiss', 'sentence_transformers', 'bm25s', 'torch', 'transformers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_opening_and_searching_an_index_loads_no_model_code(tmp_path) -> None:
    """A reader with a remote embedder (or ``qwen3-rag info``) has no use for torch: it costs seconds and
    hundreds of MB at start."""
    code = (
        "import sys, numpy as np\n"
        "from qwen3_rag import Document, Index\n"
        "from qwen3_rag.cli import main\n"
        "from qwen3_rag.pipelines.writing import whole_document\n"
        "from qwen3_rag import Retriever\n"
        "from qwen3_rag.retrieval.remote import RemoteEmbedder, RemoteReranker\n"
        "with Index.create(sys.argv[1], dim=4, chunk_size=0) as index, index.transaction():\n"
        "    index.write([whole_document(Document('a', 'x'))], np.eye(1, 4, dtype=np.float32))\n"
        "assert main(['info', sys.argv[1]]) in (0, None)\n"
        "with Index.open(sys.argv[1], read_only=True) as index:\n"
        "    index.search_vectors(np.ones((1, 4), np.float32), 1); index.keyword_search(['x'], 1)\n"
        "print('heavy:', [m for m in ('torch', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ix")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().endswith("heavy: []"), out.stdout[-500:] + out.stderr[-2000:]


#: The public API of ``import qwen3_rag``: a change here is a change users see (CHANGELOG.md says which).
PUBLIC = {
    "DEFAULT_EMBEDDING_MODEL", "DEFAULT_INSTRUCTION", "DEFAULT_RERANKER_MODEL", "TASKS", "Chunk", "Chunker",
    "Document", "DocumentWriter", "Embedder", "FilterError", "Hit", "Index", "IndexCounts", "IndexDamagedError",
    "IndexLockedError", "IndexMismatchError", "IngestReport", "Reranker", "RerankResult", "Retriever", "WriteStats",
    "__version__", "answer", "build_context", "evaluate_run", "format_query", "format_reranker_input", "ingest",
    "ingest_documents", "load_beir", "load_embedder", "load_reranker",
}


def test_public_api():
    import qwen3_rag

    assert set(qwen3_rag.__all__) == PUBLIC and len(qwen3_rag.__all__) == len(PUBLIC)
    for name in qwen3_rag.__all__:
        assert hasattr(qwen3_rag, name), name


def test_the_classes_implement_their_contracts(hash_embedder, tiny_embedder, tiny_reranker, tmp_path):
    from qwen3_rag import Index
    from qwen3_rag.protocols import PairScorer, StorageBackend, TextEmbedder, TokenCounter, TokenEmbedder

    assert isinstance(tiny_embedder, TokenEmbedder) and isinstance(tiny_embedder, TokenCounter)
    assert isinstance(hash_embedder, TextEmbedder) and not isinstance(hash_embedder, TokenEmbedder)
    assert isinstance(tiny_reranker, PairScorer)
    with Index.create(tmp_path / "ix", hash_embedder) as index:
        assert isinstance(index, StorageBackend)


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "qwen3_rag", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "qwen3-rag" in out.stdout


def test_missing_extra_names_the_pip_command():
    import pytest

    from qwen3_rag._optional import require

    with pytest.raises(ImportError, match=r"pip install 'qwen3-rag\[nothing\]'"):
        require("no_such_module_xyz", "nothing", "a test feature")
