"""A FAISS index addressed by stable int64 ids, built from a FAISS-style spec.

Specs: ``Flat`` (exact inner product), ``HNSW<M>`` (e.g. ``HNSW32``), ``IVF<n>,Flat`` and
``IVF<n>,PQ<m>``. IVF indexes need training; until enough vectors exist (``39 * n``, and at least 256 for PQ)
the index is exact (``Flat``) and it is trained once on every stored vector when the threshold is crossed.
Vectors are unit rows and the metric is inner product (= cosine).

Deletion: ``Flat`` and ``IVF`` remove vectors; ``HNSW`` cannot, so deleted ids become tombstones that searches
exclude and the index is rebuilt from the store (compaction) when they reach a quarter of it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

_SPEC = re.compile(
    r"^(?:(?P<flat>Flat)|HNSW(?P<m>\d+)(?:,Flat)?|IVF(?P<nlist>\d+),(?:(?P<ivfflat>Flat)|PQ(?P<pq>\d+)))$",
    re.IGNORECASE,
)
#: Most IVF lists: 2**20 is what FAISS suggests for a billion vectors; training needs 39 vectors a list.
MAX_NLIST = 1 << 20
#: Most PQ sub-quantizers: one per dimension of the largest Qwen3-Embedding (8B, 4096 dimensions).
MAX_PQ_M = 4096
#: Compact an HNSW index when this fraction of its vectors is deleted.
COMPACT_FRACTION = 0.25
#: Up to this many tombstones, an unfiltered HNSW search fetches k + tombstones hits and drops the dead ones
#: (k live hits guaranteed); above it, a "not deleted" id selector is used.
OVERFETCH_TOMBSTONES = 1024


@dataclass(frozen=True)
class IndexSpec:
    """A parsed index spec.

    Attributes:
        spec: The canonical spec string (``Flat``, ``HNSW32``, ``IVF256,Flat``, ``IVF256,PQ16``).
        kind: ``flat``, ``hnsw`` or ``ivf``.
        hnsw_m: Neighbours per node for HNSW.
        nlist: Number of IVF lists.
        pq_m: Number of PQ sub-quantizers (0 for IVF-Flat).
    """

    spec: str
    kind: str
    hnsw_m: int = 0
    nlist: int = 0
    pq_m: int = 0

    @classmethod
    def parse(cls, spec: str) -> IndexSpec:
        """Parse ``Flat``, ``HNSW<M>``, ``IVF<n>,Flat`` or ``IVF<n>,PQ<m>``.

        Bounds: ``M`` from 2 to 256, ``n`` from 1 to :data:`MAX_NLIST` (2**20), ``m`` from 1 to
        :data:`MAX_PQ_M` (and it must divide the dimension, :meth:`check_dim`).

        Raises:
            ValueError: for any other spec, or a size out of bounds.
        """
        m = _SPEC.match(spec.replace(" ", ""))
        if not m:
            raise ValueError(
                f"unknown index type {spec!r}; use Flat, HNSW<M> (e.g. HNSW32), "
                "IVF<n>,Flat (e.g. IVF1024,Flat) "
                "or IVF<n>,PQ<m> (e.g. IVF1024,PQ16)"
            )
        if m.group("flat"):
            return cls("Flat", "flat")
        if m.group("m"):
            M = int(m.group("m"))
            if not 2 <= M <= 256:
                raise ValueError(f"HNSW M must be between 2 and 256, got {M}")
            return cls(f"HNSW{M}", "hnsw", hnsw_m=M)
        nlist = int(m.group("nlist"))
        if not 1 <= nlist <= MAX_NLIST:
            raise ValueError(
                f"IVF needs 1 to {MAX_NLIST:,} lists (2**20, enough for a billion vectors), got IVF{nlist}; "
                "a common choice is about 4 * sqrt(number of vectors), e.g. IVF4096 for a million"
            )
        if m.group("pq"):
            pq = int(m.group("pq"))
            if not 1 <= pq <= MAX_PQ_M:
                raise ValueError(f"PQ needs 1 to {MAX_PQ_M} sub-quantizers, dividing the dimension, got PQ{pq}")
            return cls(f"IVF{nlist},PQ{pq}", "ivf", nlist=nlist, pq_m=pq)
        return cls(f"IVF{nlist},Flat", "ivf", nlist=nlist)

    def check_dim(self, dim: int) -> None:
        """Raise ValueError when the spec cannot be used with vectors of ``dim`` dimensions."""
        if self.pq_m and (self.pq_m < 1 or dim % self.pq_m):
            divisors = [d for d in (4, 8, 16, 32, 48, 64, 96) if dim % d == 0]
            raise ValueError(
                f"{self.spec}: PQ{self.pq_m} needs a dimension divisible by {self.pq_m}, the "
                f"embeddings have {dim}; use PQ with one of {divisors}"
            )

    @property
    def train_size(self) -> int:
        """Vectors needed before an IVF index is trained (0 when no training is needed)."""
        if self.kind != "ivf":
            return 0
        return max(39 * self.nlist, 256 if self.pq_m else 0)


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(
        np.fromiter((int(i) for i in ids), dtype=np.int64)
        if not isinstance(ids, np.ndarray)
        else ids.astype(np.int64, copy=False)
    )


class VectorIndex:
    """The FAISS part of an index: ids -> unit vectors, inner-product search with optional id restriction.

    Args:
        dim: Vector dimension.
        spec: An index spec (see :class:`IndexSpec`).
        use_gpu: ``"auto"`` searches on the GPUs when this faiss has them, ``True`` requires them, ``False``
            never.

    Attributes:
        ef_search: HNSW candidate list size at search time; None = ``max(64, 2 * k, n / 4000)`` for ``n``
            vectors. Larger is slower and finds more of the true neighbours (see BENCHMARKS.md, 3. Vector search).
        nprobe: IVF lists searched; None = ``max(16, nlist / 16)`` (4x that with a filter).
    """

    ef_search: int | None = None
    nprobe: int | None = None

    def __init__(self, dim: int, spec: str | IndexSpec = "Flat", use_gpu: bool | str = "auto") -> None:
        self.dim = int(dim)
        self.spec = spec if isinstance(spec, IndexSpec) else IndexSpec.parse(spec)
        self.spec.check_dim(self.dim)
        self.tombstones: set[int] = set()
        self._dead: tuple[np.ndarray, list[object]] | None = None  # see _tombstone_ids; None after a change
        self._index = self._flat()
        self._trained = self.spec.kind != "ivf"
        self._gpu_index: faiss.Index | None = None
        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if use_gpu is True and ngpu == 0:
            raise RuntimeError(
                "use_gpu=True but this faiss has no GPUs; install 'qwen3-rag[gpu]' on a CUDA machine "
                "or pass use_gpu='auto'"
            )
        self._use_gpu = bool(use_gpu) and ngpu > 0 and self.spec.kind != "hnsw"
        if self._use_gpu:
            logger.info("searching on %d GPU(s)", ngpu)
        if self.spec.kind == "hnsw":
            self._index = self._hnsw()

    # -- construction
    # -----------------------------------------------------------------------------------------

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))

    def _hnsw(self) -> faiss.Index:
        hnsw = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = max(40, 2 * self.spec.hnsw_m)
        return faiss.IndexIDMap(hnsw)

    def _ivf(self) -> faiss.Index:
        body = "Flat" if not self.spec.pq_m else f"PQ{self.spec.pq_m}"
        index = faiss.index_factory(self.dim, f"IVF{self.spec.nlist},{body}", faiss.METRIC_INNER_PRODUCT)
        if self.spec.pq_m:
            # polysemous training (on by default) only serves Hamming-filtered search, which is not used, and
            # costs seconds even on a few hundred vectors
            faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False  # type: ignore[attr-defined]  # faiss's stubs are incomplete
        return index

    @property
    def is_trained(self) -> bool:
        """False while an IVF index still runs as an exact index, waiting for enough vectors."""
        return self._trained

    @property
    def effective_type(self) -> str:
        """What is actually searched: the spec, or ``Flat`` for an untrained IVF."""
        return self.spec.spec if self._trained else "Flat"

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstones included."""
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal - len(self.tombstones)

    def reset(self, train_vectors: np.ndarray | None = None) -> None:
        """Empty the index; an IVF spec is trained on ``train_vectors`` when they are enough, else runs
        exact."""
        self.tombstones.clear()
        self._dead = None
        self._gpu_index = None
        if (
            self.spec.kind == "ivf"
            and train_vectors is not None
            and len(train_vectors) >= self.spec.train_size
        ):
            index = self._ivf()
            logger.info("training %s on %d vectors", self.spec.spec, len(train_vectors))
            index.train(np.ascontiguousarray(train_vectors, dtype=np.float32).reshape(-1, self.dim))
            self._index, self._trained = index, True
        elif self.spec.kind == "hnsw":
            self._index = self._hnsw()
        else:
            self._index, self._trained = self._flat(), self.spec.kind != "ivf"

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the whole content (training an IVF index when there are enough vectors)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self.reset(vectors)
        self.add(ids, vectors)

    def needs_training(self, live_count: int) -> bool:
        """True when an untrained IVF index now has enough vectors to be trained (call :meth:`build`)."""
        return self.spec.kind == "ivf" and not self._trained and live_count >= self.spec.train_size

    def needs_compaction(self) -> bool:
        """True when tombstones make up a large part of an HNSW index (rebuild it with :meth:`build`)."""
        return bool(self.tombstones) and len(self.tombstones) >= COMPACT_FRACTION * max(1, self.ntotal)

    # -- updates
    # ----------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under new ids (ids must not be present)."""
        ids = _as_ids(ids)
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if vectors.shape[0] != len(ids):
            raise ValueError(f"got {len(ids)} ids for {vectors.shape[0]} vectors")
        self._index.add_with_ids(vectors, ids)
        self._gpu_index = None

    def remove(self, ids: Iterable[int]) -> None:
        """Remove ids (tombstones for HNSW)."""
        arr = _as_ids(ids)
        if not len(arr):
            return
        self._gpu_index = None
        if self.spec.kind == "hnsw":
            held = arr[np.isin(arr, faiss.vector_to_array(self._index.id_map))]  # type: ignore[attr-defined]
            self.tombstones.update(int(i) for i in held)
            self._dead = None
        else:
            self._index.remove_ids(faiss.IDSelectorBatch(arr))

    def ids(self) -> np.ndarray:
        """Every id held (tombstones included)."""
        index = self._index
        if isinstance(index, faiss.IndexIDMap):
            return faiss.vector_to_array(index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(index)
        invlists = ivf.invlists
        out = []
        for lst in range(ivf.nlist):
            n = invlists.list_size(lst)  # type: ignore[union-attr]  # faiss's stubs are incomplete
            if n:
                ptr = invlists.get_ids(lst)  # type: ignore[union-attr]  # faiss's stubs are incomplete
                out.append(faiss.rev_swig_ptr(ptr, n).copy())
                invlists.release_ids(lst, ptr)  # type: ignore[union-attr]  # faiss's stubs are incomplete
        return np.concatenate(out).astype(np.int64) if out else np.empty(0, np.int64)

    # -- search
    # -----------------------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner-product search, restricted to ``allowed`` ids when given.

        Returns:
            ``(scores float32 (n, k), ids int64 (n, k))``; missing hits have id -1 and score -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = q.shape[0]
        k = int(k)
        if k <= 0 or self.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return np.full((n, max(k, 0)), -np.inf, np.float32), np.full((n, max(k, 0)), -1, np.int64)
        sel: faiss.IDSelector | None = None
        keep: list[object] = []  # keeps selector parts alive while faiss uses them
        if allowed is not None:
            arr = _as_ids(allowed)
            keep.append(arr)
            sel = faiss.IDSelectorBatch(arr)
            keep.append(sel)
        elif len(self.tombstones) > OVERFETCH_TOMBSTONES:
            _, selectors = self._tombstone_ids(selector=True)
            sel = selectors[-1]  # type: ignore[assignment]
        elif self.tombstones:
            # few tombstones: ask for that many more hits and drop them, which keeps k live hits exact-count
            scores, ids = self._search_plain(q, min(self.ntotal, k + len(self.tombstones)))
            alive = ~np.isin(ids, self._tombstone_ids()[0])
            out_s = np.full((n, k), -np.inf, np.float32)
            out_i = np.full((n, k), -1, np.int64)
            for row in range(n):
                keep_ids, keep_scores = ids[row][alive[row]][:k], scores[row][alive[row]][:k]
                out_i[row, : len(keep_ids)], out_s[row, : len(keep_ids)] = keep_ids, keep_scores
            return out_s, out_i
        kk = min(k, self.ntotal)
        gpu = self._gpu() if sel is None and self._use_gpu else None
        if gpu is not None:
            scores, ids = gpu.search(q, kk)
        else:
            scores, ids = self._index.search(q, kk, params=self._params(sel, kk))
        del keep
        ids = ids.astype(np.int64, copy=False)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        if kk < k:
            scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        return scores, ids

    def _tombstone_ids(self, selector: bool = False) -> tuple[np.ndarray, list[object]]:
        """The tombstones as an int64 array (and a FAISS "not one of these" selector), built once per change.

        Tombstones change only through :meth:`remove` and :meth:`reset`, which drop this cache.
        """
        if self._dead is None:
            self._dead = (np.fromiter(self.tombstones, np.int64, len(self.tombstones)), [])
        dead, selectors = self._dead
        if selector and not selectors:
            inner = faiss.IDSelectorBatch(dead)
            selectors += [inner, faiss.IDSelectorNot(inner)]  # the outer one needs the inner one alive
        return dead, selectors

    def _search_plain(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self._index.search(q, k, params=self._params(None, k))
        ids = ids.astype(np.int64, copy=False)
        return np.where(ids < 0, -np.inf, scores).astype(np.float32), ids

    def _params(self, sel: faiss.IDSelector | None, k: int) -> faiss.SearchParameters | None:
        if self.spec.kind == "hnsw":
            # the default widens with the index: a fixed 64 finds most of the true top 10 at 100k vectors but
            # far fewer at 1M (see BENCHMARKS.md, 3. Vector search)
            ef = max(int(self.ef_search), k) if self.ef_search else max(64, 2 * k, self.ntotal // 4000)
            return (
                faiss.SearchParametersHNSW(sel=sel, efSearch=ef)  # type: ignore[attr-defined]  # faiss's stubs are incomplete
                if sel is not None
                else faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]  # faiss's stubs are incomplete
            )
        if self.spec.kind == "ivf" and self._trained:
            if self.nprobe:
                nprobe = min(self.spec.nlist, int(self.nprobe))
            else:
                nprobe = min(self.spec.nlist, max(16, self.spec.nlist // 16))
                if sel is not None:
                    nprobe = min(self.spec.nlist, nprobe * 4)
            return (
                faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)  # type: ignore[call-arg]  # faiss's stubs are incomplete
                if sel is not None
                else faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]  # faiss's stubs are incomplete
            )
        return faiss.SearchParameters(sel=sel) if sel is not None else None  # type: ignore[call-arg]  # faiss's stubs are incomplete

    def _gpu(self) -> faiss.Index | None:
        # a GPU copy for unfiltered searches; filtered ones and HNSW stay on the CPU index (the saved one)
        if self._gpu_index is None:
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
            except Exception as exc:  # an index type faiss cannot move: search on the CPU
                logger.info("searching %s on the CPU (%s)", self.effective_type, exc)
                self._use_gpu = False
                return None
        return self._gpu_index

    # -- persistence
    # ------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The (CPU) index serialised by FAISS; tombstones are not part of it (the store knows them)."""
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, dim: int, spec: str | IndexSpec, use_gpu: bool | str = "auto") -> VectorIndex:
        """Read :meth:`to_bytes`' output.

        Raises:
            ValueError: the bytes are not a FAISS index of this dimension and kind.
        """
        self = cls(dim, spec, use_gpu=use_gpu)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"not a FAISS index ({str(exc).splitlines()[0]})") from None
        if index.d != self.dim:
            raise ValueError(f"the FAISS index has dimension {index.d}, expected {self.dim}")
        if _kind(index) != self.spec.kind or (self.spec.kind == "ivf" and faiss.extract_index_ivf(index).nlist
                                               != self.spec.nlist):
            raise ValueError(f"the FAISS index is not a {self.spec.spec} index")
        self._index = index
        self._trained = self.spec.kind != "ivf" or not isinstance(index, faiss.IndexIDMap)
        return self


def _kind(index: faiss.Index) -> str:
    """``flat``, ``hnsw`` or ``ivf``: what a deserialised index is."""
    if isinstance(index, faiss.IndexIDMap):
        inner = faiss.downcast_index(index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return "unknown"
    return "ivf"

class VectorComponent:
    """The vector search structure of a local index, as a component kept in step with the store
    (:mod:`qwen3_rag.indexers.derived`).

    An exact (``Flat``, or an IVF that is not trained yet) index is rebuilt from the store's vectors when opened
    rather than stored again in a file; HNSW and trained IVF indexes, which cost time to build, are published.
    HNSW cannot delete: removed ids become tombstones, and the index is rebuilt from the store when they reach a
    quarter of it; an IVF index is trained from the store once it holds enough vectors.
    """

    name = "vectors"
    suffix = "faiss"

    def __init__(self, dim: int, spec: IndexSpec, use_gpu: bool | str = "auto") -> None:
        self.dim = dim
        self.spec = spec
        self.use_gpu = use_gpu
        self.index = VectorIndex(dim, spec, use_gpu=use_gpu)

    @property
    def persisted(self) -> bool:
        return self.index.effective_type != "Flat"

    def rebuild(self, store: Any) -> None:
        vi = VectorIndex(self.dim, self.spec, use_gpu=self.use_gpu)
        n = store.count_chunks()
        if self.spec.kind == "ivf" and n >= self.spec.train_size:
            # train on an even sample of up to 256 vectors per list (what faiss itself would use)
            want = min(n, max(self.spec.train_size, 256 * self.spec.nlist))
            step = max(1, n // want)
            sample = [v[::step] for _, v in store.iter_vectors(self.dim)]
            logger.info("training %s on %d vectors", self.spec.spec, min(want, sum(len(v) for v in sample)))
            vi.reset(np.concatenate(sample)[:want] if sample else None)
        for ids, vecs in store.iter_vectors(self.dim):
            vi.add(ids, vecs)
        self.index = vi

    def apply(self, store: Any, removed: np.ndarray, min_id: int) -> None:
        vi = self.index
        vi.remove(removed)
        for ids, vecs in store.iter_vectors(self.dim, min_id=min_id):
            vi.add(ids, vecs)
        if vi.needs_training(len(vi)) or vi.needs_compaction():
            logger.info("rebuilding %s (%s)", vi.spec.spec,
                        "training" if vi.needs_training(len(vi)) else "compacting deleted vectors")
            self.rebuild(store)

    def dump(self) -> bytes | None:
        return self.index.to_bytes() if self.persisted else None

    def ids(self) -> np.ndarray:
        vi = self.index
        return np.setdiff1d(vi.ids(), np.fromiter(vi.tombstones, np.int64, len(vi.tombstones)))

    def load(self, data: bytes, store: Any) -> None:
        vi = VectorIndex.from_bytes(data, self.dim, self.spec, use_gpu=self.use_gpu)
        if self.spec.kind == "hnsw":  # tombstones are the held ids the store no longer has
            vi.remove(np.setdiff1d(vi.ids(), store.all_chunk_ids()))
        self.index = vi
