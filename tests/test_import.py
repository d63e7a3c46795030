import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, qwen3_rag; "
        "heavy = [m for m in ('langchain_core', 'langchain', 'llama_index', 'vllm', 'fastapi', 'ray', 'pymilvus', "
        "'faiss', 'sentence_transformers', 'bm25s') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api():
    import qwen3_rag

    for name in qwen3_rag.__all__:
        assert hasattr(qwen3_rag, name), name


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "qwen3_rag", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "qwen3-rag" in out.stdout


def test_missing_extra_names_the_pip_command():
    import pytest

    from qwen3_rag._optional import require

    with pytest.raises(ImportError, match=r"pip install 'qwen3-rag\[nothing\]'"):
        require("no_such_module_xyz", "nothing", "a test feature")
