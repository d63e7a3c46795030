"""Reading never writes: ``info`` and ``query`` on an index leave its directory exactly as it was, and an index that
cannot be written (a read-only mount, files of another user, a copy without its ``-wal`` / ``-shm`` files) is served
read-only."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from index_helpers import corpus

from qwen3_rag import Index, Retriever, ingest_documents
from qwen3_rag.cli import main

NOBODY = 65534


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry of ``folder`` (and the folder itself) with its size and modification time in ns."""
    out = {".": (0, folder.stat().st_mtime_ns)}
    for path in folder.iterdir():
        st = path.stat()
        out[path.name] = (st.st_size, st.st_mtime_ns)
    return out


def read_everything(location: Path, embedder: Any) -> list[Any]:
    """What a reader does: the manifest, dense, filtered and keyword searches, documents."""
    assert Index.exists(location) and Index.read_manifest(location)["dim"] == embedder.dim
    with Index.open(location, embedder, read_only=True) as reader:
        hits = reader.search("qwen embedding model", k=5)
        return [reader.manifest["counts"], [h.chunk_id for h in hits], reader.search("faiss", k=3, filter={"group": 1}),
                reader.keyword_search(["sqlite store"], 5), reader.get_documents(["d3"])]


def build(path: Path, embedder: Any) -> Index:
    index = Index.create(path, embedder, chunk_size=12, chunk_overlap=0, index_type="HNSW8")
    ingest_documents(corpus(20), index)
    return index


@pytest.fixture(params=["closed", "live"])
def index_copy(request: pytest.FixtureRequest, tmp_path: Path, hash_embedder: Any) -> tuple[Path, list[Any]]:
    """An HNSW index copied elsewhere (as a backup or a download would), and what reading it gives: copied once its
    writer closed it, or while its writer had it open (then without its ``-wal`` / ``-shm`` files, in WAL mode)."""
    index = build(tmp_path / "ix", hash_embedder)
    if request.param == "live":
        index.commit()
        index._store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
        shutil.copytree(tmp_path / "ix", tmp_path / "copy", ignore=shutil.ignore_patterns("*-wal", "*-shm"))
        index.close()
    else:
        index.close()
        shutil.copytree(tmp_path / "ix", tmp_path / "copy")
    return tmp_path / "copy", read_everything(tmp_path / "ix", hash_embedder)


def test_reading_writes_nothing_into_the_index(tmp_path: Path, hash_embedder: Any) -> None:
    build(tmp_path / "ix", hash_embedder).close()
    expected = read_everything(tmp_path / "ix", hash_embedder)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ix", copy)
    assert not list(copy.glob("*-wal")) and not list(copy.glob("*-shm"))  # a closed writer left no log behind
    before = snapshot(copy)
    assert read_everything(copy, hash_embedder) == expected
    assert main(["info", str(copy)]) == 0 and main(["info", str(copy), "--json"]) == 0
    assert snapshot(copy) == before


def test_a_query_on_the_command_line_writes_nothing(tmp_path: Path, minilm_embedder: Any, capsys: Any) -> None:
    with Index.create(tmp_path / "ix", minilm_embedder, chunk_size=16, chunk_overlap=0) as index:
        ingest_documents(corpus(6), index)
    before = snapshot(tmp_path / "ix")
    for mode in ([], ["--hybrid"], ["--bm25"]):
        assert main(["query", str(tmp_path / "ix"), "faiss vectors", *mode]) == 0
    assert "[1]" in capsys.readouterr().out
    with Retriever(tmp_path / "ix", embedder=minilm_embedder) as retriever:
        assert retriever.search("sqlite", k=2, mode="hybrid", filter={"group": 1})
    assert snapshot(tmp_path / "ix") == before


def test_an_index_that_cannot_be_written_is_read_as_a_snapshot(index_copy: tuple[Path, list[Any]],
                                                               hash_embedder: Any, monkeypatch: Any) -> None:
    """As this user sees a read-only mount (the tests may run as root, whom permissions do not stop)."""
    copy, expected = index_copy
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK and
                        Path(path).resolve().is_relative_to(copy.resolve()) else real_access(path, mode, **kw))
    before = snapshot(copy)
    assert read_everything(copy, hash_embedder) == expected
    assert snapshot(copy) == before


def plain(value: Any) -> Any:
    """``value`` as JSON reads it back (what crosses the pipe from a child process)."""
    return json.loads(json.dumps(value, default=repr))


def _as_nobody(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child running as the unprivileged user ``nobody``; its result (or error) comes back
    through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run, report, exit without running the parent's cleanup
        import faulthandler

        import faiss

        faulthandler.dump_traceback_later(120, exit=True)  # never hang the test run
        faiss.omp_set_num_threads(1)  # OpenMP's thread pool does not survive a fork
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result: Any = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = f"{type(exc).__name__} as nobody: {exc}"
        os.write(write_end, json.dumps(result, default=repr).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture()
def shared_folder() -> Iterator[Path]:
    """A folder every user can read (pytest's temporary folders are private to the user running the tests)."""
    folder = Path(tempfile.mkdtemp(prefix="qwen3-rag-ro-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(folder)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_files_of_another_user_are_read_without_write_access(index_copy: tuple[Path, list[Any]], hash_embedder: Any,
                                                             shared_folder: Path) -> None:
    """A real chmod: the directory and its files read-only for the user reading them (``nobody`` when the tests run
    as root)."""
    copy, expected = index_copy
    target = shared_folder / "ix"
    shutil.copytree(copy, target)
    for path in [*target.iterdir(), target]:
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                                                               if path.is_dir() else 0))
    before = snapshot(target)

    def read() -> Any:
        assert not os.access(target, os.W_OK)
        return plain(read_everything(target, hash_embedder))

    assert (_as_nobody(read) if os.geteuid() == 0 else read()) == plain(expected)
    assert snapshot(target) == before


def test_a_copy_of_a_live_index_without_its_log_files_is_served(index_copy: tuple[Path, list[Any]],
                                                                hash_embedder: Any) -> None:
    copy, expected = index_copy
    assert read_everything(copy, hash_embedder) == expected
