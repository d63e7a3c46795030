"""Disk and memory footprint of an index against what it has to hold (issue 19).

Builds a qwen3-rag index of SciFact (whole documents by default, ``--chunk-size 0``) and, beside it, the
hand-written baseline that keeps the same texts and vectors: the texts as JSON lines and a FAISS ``IndexFlatIP``
file. Reports the bytes on disk of each, per chunk, and against the *budget* of issue 19: twice the UTF-8 bytes
of the texts plus one float32 copy of the vectors. Then it replaces 10% of the documents (new text, same ids),
as an update does, and measures the index again. Last, each side is opened in a fresh process that runs the
same 200 searches; its resident set size after its imports and after the searches are reported.

The vectors are random unit vectors of MiniLM's dimension (the bytes stored do not depend on their values; the
tokenizer is MiniLM's, so chunking is real); ``--embedder minilm`` embeds with the real model instead.

    python benchmarks/bench_footprint.py                      # whole SciFact documents
    python benchmarks/bench_footprint.py --chunk-size 128     # the default chunking
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402
from bench_ingest import RandomEmbedder  # noqa: E402

from qwen3_rag import Document  # noqa: E402
from qwen3_rag.indexers.index import Index  # noqa: E402
from qwen3_rag.pipelines.writing import ingest_documents  # noqa: E402
from qwen3_rag.retrieval.embedding import Embedder  # noqa: E402

SEARCHES = 200

# The resident set now, in KiB (ru_maxrss would be the import peak, not what the open index holds).
_RSS = """
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
"""
# One process per side: open, search SEARCHES times (dense, and BM25 for qwen3-rag), report RSS in KiB.
_QUERY_QWEN3 = """
import sys, numpy as np
from qwen3_rag.indexers.index import Index
{RSS}base = rss()
index = Index.open(sys.argv[1], read_only=True)
q = np.random.default_rng(1).standard_normal((int(sys.argv[2]), index.dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
for row in q:
    index.search_vectors(row[None, :], 10)
for n in range(int(sys.argv[2])):
    index.keyword_search([f"protein cell {n}"], 10)
print(base, rss())
""".replace("{RSS}", _RSS)
_QUERY_BASELINE = """
import json, sys, numpy as np, faiss
{RSS}base = rss()
index = faiss.read_index(sys.argv[1] + "/vectors.faiss")
with open(sys.argv[1] + "/texts.jsonl", encoding="utf-8") as f:
    texts = [json.loads(line) for line in f]
q = np.random.default_rng(1).standard_normal((int(sys.argv[2]), index.d)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
for row in q:
    _, ids = index.search(row[None, :], 10)
    hits = [texts[i] for i in ids[0]]
print(base, rss())
""".replace("{RSS}", _RSS)


def size(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def corpus(n_docs: int | None) -> list[Document]:
    rows = []
    with open(C.data_dir("scifact") / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = (row.get("title", "") + "\n" + row.get("text", "")).strip()
            rows.append(Document(id=str(row["_id"]), text=text, source="scifact/corpus.jsonl"))
            if n_docs and len(rows) >= n_docs:
                break
    return rows


def updated(docs: list[Document]) -> list[Document]:
    """Every tenth document with new text (its second half first), the rest as they were."""
    out = []
    for n, doc in enumerate(docs):
        if n % 10 == 0:
            half = len(doc.text) // 2
            doc = Document(id=doc.id, text=doc.text[half:] + "\n" + doc.text[:half], source=doc.source)
        out.append(doc)
    return out


def baseline(folder: Path, index: Any) -> None:
    """The hand-written store of the same chunks: texts as JSON lines, vectors in a FAISS flat file."""
    import faiss

    folder.mkdir()
    chunks = [c for doc_id, _, _ in index.iter_documents() for c in index.chunks_of(doc_id)]
    vectors = index.get_vectors([c.chunk_id for c in chunks])
    with open(folder / "texts.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"id": c.chunk_id, "doc": c.doc_id, "source": c.source, "text": c.text},
                               ensure_ascii=False) + "\n")
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(flat, str(folder / "vectors.faiss"))


def rss(script: str, folder: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, str(folder), str(SEARCHES)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    base, peak = map(int, out.stdout.split()[-2:])
    return {"rss_after_imports_mb": round(base / 1024, 1), "rss_after_searches_mb": round(peak / 1024, 1),
            "rss_added_mb": round((peak - base) / 1024, 1)}


def measure(label: str, folder: Path, n_chunks: int, budget: int) -> dict[str, Any]:
    files = size(folder)
    total = sum(files.values())
    return {"side": label, "bytes": total, "mb": round(total / 1e6, 2), "bytes_per_chunk": round(total / n_chunks),
            "x_budget": round(total / budget, 3), "files": files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=0, help="first N SciFact documents (0 = all 5,183)")
    ap.add_argument("--chunk-size", type=int, default=0)
    ap.add_argument("--index-type", default="Flat")
    ap.add_argument("--embedder", choices=["random", "minilm"], default="random")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "footprint.json"))
    args = ap.parse_args()

    docs = corpus(args.n_docs or None)
    tokens = Embedder(C.minilm_path(), device="cpu", max_length=256)
    embedder = tokens if args.embedder == "minilm" else RandomEmbedder(tokens)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ix, base = Path(tmp) / "index", Path(tmp) / "baseline"
        for step, batch in (("built", docs), ("after updating 10%", updated(docs))):
            with Index.open_or_create(ix, embedder, chunk_size=args.chunk_size, index_type=args.index_type) as index:
                ingest_documents(batch, index)
                n_chunks = len(index)
                chunks = [c for d, _, _ in index.iter_documents() for c in index.chunks_of(d)]
                text_bytes = sum(len(c.text.encode("utf-8")) for c in chunks)
                budget = 2 * (text_bytes + n_chunks * index.dim * 4)
                if step == "built":
                    baseline(base, index)
                    rows.append({**measure("hand-written (JSON lines + FAISS flat)", base, n_chunks, budget),
                                 "step": step, **rss(_QUERY_BASELINE, base)})
            rows.append({**measure("qwen3-rag", ix, n_chunks, budget), "step": step,
                         **(rss(_QUERY_QWEN3, ix) if step == "built" else {})})
    for row in rows:
        print(json.dumps(row))
    C.print_table(rows, ["side", "step", "mb", "bytes_per_chunk", "x_budget", "rss_added_mb", "rss_after_searches_mb"])
    C.write_results(args.out, machine=C.machine(), args=vars(args), documents=len(docs), chunks=n_chunks,
                    text_bytes=text_bytes, vector_bytes=n_chunks * index.dim * 4, budget_bytes=budget, rows=rows)


if __name__ == "__main__":
    main()
