"""VectorIndex: the search-time knobs of the approximate index types, and the bounds of index specs."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_rag.indexers.vector_index import MAX_NLIST, IndexSpec, VectorIndex


def test_search_knobs_trade_speed_for_recall() -> None:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64)
    exact = VectorIndex(32, "Flat")
    exact.add(ids, vecs)
    _, truth = exact.search(vecs[:200], 10)
    hnsw = VectorIndex(32, "HNSW4")
    hnsw.add(ids, vecs)

    def recall(index: VectorIndex) -> float:
        _, found = index.search(vecs[:200], 10)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))

    hnsw.ef_search = 10
    low = recall(hnsw)
    hnsw.ef_search = 400
    assert recall(hnsw) > low and recall(hnsw) > 0.97
    ivf = VectorIndex(32, "IVF16,Flat")
    ivf.reset(train_vectors=vecs)
    ivf.add(ids, vecs)
    ivf.nprobe = 1
    one = recall(ivf)
    ivf.nprobe = 16
    assert recall(ivf) == 1.0 > one


def test_index_passes_its_knobs_to_every_search(tmp_path, hash_embedder) -> None:
    from qwen3_rag import Document, Index, ingest_documents

    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0, index_type="HNSW8") as index:
        ingest_documents([Document(id=f"d{i}", text=f"text number {i}") for i in range(50)], index)
        seen = []
        real = index.vectors._params

        def spy(sel, k):
            seen.append(index.vectors.ef_search)
            return real(sel, k)

        index.vectors._params = spy
        index.ef_search = 300
        index.search("text number 3", k=5)
        assert seen == [300]


def test_default_hnsw_breadth_grows_with_the_index(monkeypatch) -> None:
    hnsw = VectorIndex(8, "HNSW4")
    assert hnsw._params(None, 10).efSearch == 64
    assert hnsw._params(None, 50).efSearch == 100
    monkeypatch.setattr(VectorIndex, "ntotal", property(lambda self: 1_000_000))
    assert hnsw._params(None, 10).efSearch == 250  # measured: recall@10 0.885 at 64, 0.970 at 256 (1M vectors)
    hnsw.ef_search = 32
    assert hnsw._params(None, 50).efSearch == 50  # never below k


def test_tombstones_are_never_returned_on_either_hnsw_path(monkeypatch) -> None:
    import qwen3_rag.indexers.vector_index as vector_index

    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((2000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    hnsw = VectorIndex(16, "HNSW8")
    hnsw.add(np.arange(2000, dtype=np.int64), vecs)
    for threshold in (10_000, 0):  # over-fetch and drop, or the "not a tombstone" selector
        monkeypatch.setattr(vector_index, "OVERFETCH_TOMBSTONES", threshold)
        for removed in (range(0, 300), range(300, 700)):  # the tombstones grow between searches
            hnsw.remove(np.fromiter(removed, np.int64))
            _, ids = hnsw.search(vecs[:50], 10)
            assert not set(ids.ravel().tolist()) & hnsw.tombstones
            assert (ids >= 0).all()
        hnsw.reset()
        hnsw.add(np.arange(2000, dtype=np.int64), vecs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("IVF99999999999999999999,Flat", r"IVF needs 1 to 1,048,576 lists"),
        ("IVF1048577,Flat", r"IVF needs 1 to 1,048,576 lists"),
        ("IVF0,Flat", r"IVF needs 1 to"),
        ("IVF256,PQ0", r"PQ needs 1 to 4096 sub-quantizers"),
        ("IVF256,PQ99999999999999999999", r"PQ needs 1 to 4096"),
        ("HNSW99999999999999999999", r"HNSW M must be between 2 and 256"),
    ],
)
def test_absurd_index_sizes_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexSpec.parse(spec)


def test_the_largest_sizes_parse() -> None:
    assert IndexSpec.parse("IVF1048576,PQ4096").nlist == MAX_NLIST
    assert IndexSpec.parse("ivf1,flat").spec == "IVF1,Flat"
