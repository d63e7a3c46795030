"""Distributed ingestion on a local Ray (2 CPUs, no GPU): the same index as a single process, incremental re-runs
that embed nothing, a killed embedding actor retried, the CLI's ``--ray local``; and the workers' write path for a
backend that takes many writers, run in this process."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3_rag import Index
from qwen3_rag.pipelines.ingest import ingest

ray = pytest.importorskip("ray")

from qwen3_rag.cli import main  # noqa: E402
from qwen3_rag.pipelines.distributed import RayOptions, _hand  # noqa: E402
from qwen3_rag.pipelines.ray_stages import Assembler, EmbedStage, PrepareStage, WriteStage, stored_keys  # noqa: E402
from qwen3_rag.pipelines.writing import DocumentWriter  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
#: Small chunks, small commits and small actor batches, so documents are written in parts and cut between batches.
SETTINGS: dict[str, Any] = {"chunk_size": 24, "chunk_overlap": 4, "commit_every": 7, "device": "cpu"}
SMALL_BATCHES = 24 * 5  # five chunks per embedding call


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module; its workers import the tests' helpers (``tests/`` on their path)."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), saved["PYTHONPATH"]) if p)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield
    ray.shutdown()


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(10):
        (root / f"note{i:02d}.md").write_text(f"# Note {i}\n\nThis note talks about subject {i % 4}.\n\n"
                                              + "A filler sentence about cells and proteins. " * (3 * i + 1))
    records = [json.dumps({"_id": f"r{i}", "title": f"Record {i}", "text": f"record body {i}", "year": 2020 + i})
               for i in range(6)]
    (root / "records.jsonl").write_text("\n".join([*records[:3], "{not json", *records[3:]]) + "\n")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    return root


def change_corpus(root: Path) -> None:
    (root / "note03.md").write_text("# Note 3\n\nCompletely rewritten about zebras.")
    (root / "note04.md").unlink()
    (root / "new.txt").write_text("A brand new file about zebras and cells.")


def contents(location: Path) -> tuple[list[Any], list[Any], np.ndarray]:
    """Documents, chunks (with their ids) and vectors of an index, in a stable order."""
    with Index.open(location, read_only=True) as index:
        docs = sorted(index.iter_documents())
        chunks = [(c.chunk_id, c.doc_id, c.index, c.text, c.start, c.end, c.page, c.headings, c.start_line,
                   c.end_line, dict(c.metadata)) for doc_id, _, _ in docs for c in index.chunks_of(doc_id)]
        return docs, chunks, index.get_vectors([c[0] for c in chunks])


def assert_same_index(ours: Path, theirs: Path) -> None:
    docs, chunks, vectors = contents(ours)
    docs2, chunks2, vectors2 = contents(theirs)
    assert docs == docs2
    assert chunks == chunks2
    np.testing.assert_allclose(vectors, vectors2, atol=1e-5)


def summary(report: Any) -> tuple[Any, ...]:
    return (report.added, report.updated, report.unchanged, report.skipped, report.failed, report.pruned,
            report.chunks_added, report.chunks_removed, report.tokens, sorted(report.failures))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_embedding_dir: str) -> tuple[Path, Path, Any]:
    """The corpus and the index a single process makes of it."""
    root = tmp_path_factory.mktemp("plain")
    corpus = write_corpus(root / "corpus")
    report = ingest([corpus], root / "ix", model=tiny_qwen3_embedding_dir, **SETTINGS)
    assert report.added == 16 and report.failed == 1 and report.chunks_added > 40
    return corpus, root / "ix", report


def test_a_ray_run_writes_what_a_single_process_writes(local_ray: None, tmp_path: Path,
                                                        tiny_qwen3_embedding_dir: str) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    single = ingest([corpus], tmp_path / "single", model=tiny_qwen3_embedding_dir, **SETTINGS)
    options = RayOptions(address="local", actors=1, batch_tokens=SMALL_BATCHES)
    report = ingest([corpus], tmp_path / "ix", model=tiny_qwen3_embedding_dir, ray=options, **SETTINGS)
    assert summary(report) == summary(single) and report.added == 16
    assert any("line 4" in reason for _, reason in report.failures)  # the broken record, named
    assert report.timings["embed"] > 0 and report.timings["chunk"] > 0
    assert_same_index(tmp_path / "ix", tmp_path / "single")

    again = ingest([corpus], tmp_path / "ix", ray=options, **SETTINGS)
    assert again.embedded_nothing and (again.unchanged, again.chunks_added, again.tokens) == (16, 0, 0)
    assert_same_index(tmp_path / "ix", tmp_path / "single")

    # a new, a changed and a removed file, with --prune: what a single process does with them
    change_corpus(corpus)
    single = ingest([corpus], tmp_path / "single", prune=True, **SETTINGS)
    third = ingest([corpus], tmp_path / "ix", prune=True, ray=options, **SETTINGS)
    assert (third.added, third.updated, third.unchanged, third.pruned) == (1, 1, 14, 1)
    assert summary(third) == summary(single)
    assert_same_index(tmp_path / "ix", tmp_path / "single")


def test_chunks_are_embedded_with_their_context_as_in_a_single_process(
        local_ray: None, plain: tuple[Path, Path, Any], tmp_path: Path, tiny_qwen3_embedding_dir: str) -> None:
    corpus, alone, _ = plain
    settings = {**SETTINGS, "chunk_context": "title+headings"}
    single = ingest([corpus], tmp_path / "single", model=tiny_qwen3_embedding_dir, **settings)
    options = RayOptions(address="local", actors=1, batch_tokens=SMALL_BATCHES)
    report = ingest([corpus], tmp_path / "ix", model=tiny_qwen3_embedding_dir, ray=options, **settings)
    assert summary(report) == summary(single)
    assert_same_index(tmp_path / "ix", tmp_path / "single")
    # the context line reached the model: the vectors are not those of the chunks read alone
    assert not np.allclose(contents(tmp_path / "ix")[2], contents(alone)[2], atol=1e-3)


def test_a_killed_embedding_actor_is_retried(local_ray: None, plain: tuple[Path, Path, Any], tmp_path: Path,
                                             tiny_qwen3_embedding_dir: str) -> None:
    from ray_helpers import dies_once

    corpus, plain_ix, plain_report = plain
    marker = tmp_path / "died"
    options = RayOptions(address="local", actors=1, batch_tokens=SMALL_BATCHES,
                         embedder=functools.partial(dies_once, marker=str(marker)))
    report = ingest([corpus], tmp_path / "ix", model=tiny_qwen3_embedding_dir, ray=options, **SETTINGS)
    assert marker.exists(), "the actor was to die in its first batch"
    assert int(marker.read_text()) != os.getpid()
    assert summary(report) == summary(plain_report)
    assert_same_index(tmp_path / "ix", plain_ix)  # nothing lost, nothing twice


def test_cli_index_with_ray_local(local_ray: None, tmp_path: Path, minilm_path: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    flags = ["--model", minilm_path, "--chunk-size", "64", "--chunk-overlap", "8", "--device", "cpu", "--no-progress"]
    outputs: dict[str, dict[str, Any]] = {}
    for name, extra in (("plain", []), ("ray", ["--ray", "local", "--ray-actors", "1"])):
        ix = str(tmp_path / name)
        assert main(["index", str(corpus), "--index", ix, *flags, *extra]) == 1  # the broken record: exit 1
        assert "16 added" in capsys.readouterr().out
        assert main(["info", ix, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        hits, scores = [], []
        for question in ("subject 2 cells", "record body 4", "zebras"):
            assert main(["query", ix, question, "-k", "10", "--json"]) == 0
            found = json.loads(capsys.readouterr().out)
            hits.append([(h["chunk_id"], h["doc_id"], h["text"]) for h in found])
            scores.extend(h["score"] for h in found)
        outputs[name] = {"counts": (info["documents"], info["chunks"], info["vectors"]), "hits": hits,
                         "scores": scores}
    assert outputs["ray"]["counts"] == outputs["plain"]["counts"]
    assert outputs["ray"]["hits"] == outputs["plain"]["hits"] and len(outputs["ray"]["hits"][0]) == 10
    np.testing.assert_allclose(outputs["ray"]["scores"], outputs["plain"]["scores"], atol=1e-5)

    assert main(["index", str(corpus), "--index", str(tmp_path / "ray"), *flags, "--ray", "local"]) == 1
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 16 unchanged" in out and "0 tokens embedded" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--ray-actors", "2"], "--ray-actors needs --ray ADDRESS"),
    (["--ray", "cluster"], "--ray takes local, auto or ray://HOST:PORT"),
    (["--ray", "local", "--ray-actors", "3,1"], "1 <= MIN <= MAX"),
    (["--ray", "local", "--ray-actors", "two"], "N or MIN,MAX"),
    (["--ray", "local", "--ray-batch-tokens", "0"], "--ray-batch-tokens must be at least 1"),
])
def test_cli_refuses_bad_ray_flags(tmp_path: Path, flags: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("text")
    assert main(["index", str(tmp_path / "a.txt"), "--index", str(tmp_path / "ix"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ix").exists()


def test_workers_write_whole_documents_and_pass_on_the_rest(plain: tuple[Path, Path, Any], tmp_path: Path,
                                                            tiny_qwen3_embedding_dir: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The write path of a backend that takes many writers, stage by stage in this process: each table's whole
    documents are written by its worker, the documents cut between two tables by the driver."""
    import fake_backend

    from qwen3_rag.indexers.loaders import LoadReport, iter_files
    from qwen3_rag.retrieval.models import load_embedder

    fake_backend.register()
    monkeypatch.setattr(fake_backend.JsonIndex, "concurrent_writers", True)
    corpus, plain_ix, _ = plain
    location = f"jsonfake://{tmp_path / 'ix.json'}"
    with Index.create(location, load_embedder(tiny_qwen3_embedding_dir, device="cpu"), chunk_size=24,
                      chunk_overlap=4) as index:
        record, stored = index.model_info, stored_keys(index)
    files = [(os.fsencode(p), os.fsencode(i)) for p, i in iter_files([corpus])]
    pa = pytest.importorskip("pyarrow")
    batch = pa.table({"path": [p for p, _ in files], "doc_id": [i for _, i in files]})
    rows = pa.concat_tables(PrepareStage(record, 24, 4, stored)(batch))
    embedded = EmbedStage(record, location, {"device": "cpu"})(rows)
    inside = [row for row, index in enumerate(embedded.column("index").to_pylist()) if index > 0]
    cuts = [0, *inside[::len(inside) // 3][1:4], embedded.num_rows]  # three tables end inside a document
    stage = WriteStage(location, commit_every=7)
    out = [stage(embedded.slice(a, b - a)) for a, b in zip(cuts, cuts[1:], strict=False)]
    kinds = [kind for table in out for kind in table.column("kind").to_pylist()]
    assert kinds.count("written") >= 10 and kinds.count("chunk") >= 4

    loads = LoadReport()
    with Index.open(location, load_embedder(tiny_qwen3_embedding_dir, device="cpu")) as index:
        with DocumentWriter(index, commit_every=7, on_duplicate=lambda d, r: loads.fail(d.source, r)) as writer:
            assembler = Assembler()
            for table in out:
                for _, item in assembler.take(table):
                    _hand(writer, loads, item)
        assert writer.report.added == 16 and len(loads.failed) == 1
        ours = {doc_id: [(c.index, c.text, c.start, c.end) for c in index.chunks_of(doc_id)]
                for doc_id, _, _ in index.iter_documents()}
    with Index.open(plain_ix, read_only=True) as single:
        theirs = {doc_id: [(c.index, c.text, c.start, c.end) for c in single.chunks_of(doc_id)]
                  for doc_id, _, _ in single.iter_documents()}
    assert ours == theirs
