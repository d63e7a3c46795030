"""A BM25 keyword index over chunk ids, kept in step with upserts and deletes, stored without pickle.

Scoring is bm25s (Lucene's BM25 by default). bm25s builds a static index, so this class keeps every chunk's
token ids and rebuilds the bm25s index lazily on the first search after a change, from the stored token ids
(tokenisation is not repeated).

Tokenisation (:meth:`BM25Index.tokenize`): NFKC, lower case, words of two or more word characters (bm25s's
default ``\\w\\w+``), English stop words removed, Snowball stemming (PyStemmer) -- with these settings SciFact
scores exactly what ``bm25s.tokenize(stopwords="en", stemmer=Stemmer("english"))`` scores. Runs of CJK characters
(Chinese, Japanese kana, Korean Hangul), which have no spaces between words, become character unigrams plus
bigrams, where bm25s's default keeps a whole clause as one token (see BENCHMARKS.md, 5. Retrieval quality).

On disk: one file, ``<folder>/bm25.npz`` (``np.savez``, no pickle; the folder is usually given by the index's
``sidecar_dir("bm25")``) with the arrays ``manifest`` (UTF-8 JSON: format version, BM25 and tokeniser
settings, counts, store generation), ``vocab`` (UTF-8, newline-separated tokens, position = token id),
``chunk_ids`` (int64), ``offsets`` (int64, n + 1) and ``token_ids`` (int32).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import unicodedata
import weakref
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["BM25Config", "BM25Index", "BM25Sidecar", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FILE = "bm25.npz"

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{_CJK_RANGES}]+")
_CACHE_LIMIT = 1_000_000  # words whose vocabulary ids BM25Index remembers
# a CJK run, or two or more word characters that are not CJK ([^\W...]: a class, no look-ahead per character)
_TOKEN = re.compile(f"[{_CJK_RANGES}]+|[^\\W{_CJK_RANGES}]{{2,}}")


@dataclass(frozen=True)
class BM25Config:
    """BM25 and tokeniser settings, stored with the index.

    Attributes:
        k1: Term-frequency saturation.
        b: Length normalisation.
        method: bm25s's BM25 variant.
        stemmer: A PyStemmer algorithm (``"english"``, ``"german"``, ...) or None for no stemming.
        stopwords: ``"en"`` for bm25s's English list, or None.
        cjk: How runs of CJK characters become tokens: ``"unigram+bigram"`` (best measured on XQuAD zh),
            ``"bigram"`` or ``"none"`` (keep the run as one token, as bm25s does).
    """

    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stemmer: str | None = "english"
    stopwords: Literal["en"] | None = "en"
    cjk: Literal["unigram+bigram", "bigram", "none"] = "unigram+bigram"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BM25Config:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class _Tokenizer:
    def __init__(self, config: BM25Config) -> None:
        self.config = config
        self._stem = None
        if config.stemmer:
            try:
                import Stemmer  # PyStemmer
            except ImportError as exc:
                raise ImportError(
                    f"BM25 stemming ({config.stemmer!r}) needs PyStemmer: pip install PyStemmer, "
                    "or use BM25Config(stemmer=None) (SciFact nDCG@10 drops from 0.686 to 0.662 without it)"
                ) from exc
            try:
                self._stem = Stemmer.Stemmer(config.stemmer).stemWord
            except KeyError:
                raise ValueError(f"unknown stemmer {config.stemmer!r}; choose one of "
                                 f"{', '.join(Stemmer.algorithms())} or None") from None
        if config.stopwords == "en":
            from bm25s.stopwords import STOPWORDS_EN

            self._stop: frozenset[str] = frozenset(STOPWORDS_EN)
        elif config.stopwords is None:
            self._stop = frozenset()
        else:
            raise ValueError(f"stopwords must be 'en' or None, got {config.stopwords!r}")

    def words(self, text: str) -> list[str]:
        """The words of a text (NFKC, lower case): CJK runs, or runs of two or more other word characters."""
        return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())

    def terms(self, word: str) -> list[str]:
        """The BM25 terms of one word: CJK unigrams / bigrams, nothing for a stopword, else the stemmed word."""
        # a match is either a run of CJK characters or a run without any: its first character tells which
        if word[0] >= "\u3040" and _CJK_RUN.match(word[0]):
            cjk = self.config.cjk
            if cjk == "none":
                return [word] if len(word) > 1 else []
            out = list(word) if cjk == "unigram+bigram" or len(word) == 1 else []
            out.extend(word[i:i + 2] for i in range(len(word) - 1))
            return out
        if word in self._stop:
            return []
        # no stem cache here: BM25Index caches each word's vocabulary ids, so a word is stemmed once when indexing
        return [word] if self._stem is None else [self._stem(word)]

    def __call__(self, text: str) -> list[str]:
        terms = self.terms
        return [term for word in self.words(text) for term in terms(word)]


def _quiet_bm25s_logger() -> None:
    # bm25s sets its logger to DEBUG when imported, so every rebuild would print under logging.basicConfig;
    # hand the level back to the application's logging configuration.
    bm25s_logger = logging.getLogger("bm25s")
    if bm25s_logger.level == logging.DEBUG:
        bm25s_logger.setLevel(logging.NOTSET)


class BM25Index:
    """BM25 over chunks identified by int64 ids; ``add`` upserts, ``delete`` removes, ``search`` ranks.

    Example:
        >>> bm25 = BM25Index()
        >>> bm25.add([1, 2], ["cats purr softly", "dogs bark loudly"])
        >>> [chunk_id for chunk_id, _ in bm25.search("barking dog", k=5)]
        [2]
    """

    def __init__(self, config: BM25Config | None = None) -> None:
        self.config = config or BM25Config()
        self._tokenize = _Tokenizer(self.config)
        self._vocab: dict[str, int] = {}
        self._word_ids: dict[str, tuple[int, ...]] = {}  # word -> its terms' vocabulary ids (the vocabulary only grows)
        self._docs: dict[int, np.ndarray] = {}
        self._model: Any = None  # bm25s.BM25, rebuilt lazily after a change
        self._positions: np.ndarray = np.empty(0, dtype=np.int64)  # model row -> chunk id
        #: The store generation this index reflects (set by :class:`BM25Sidecar`; None when standalone).
        self.generation: int | None = None

    # -- content
    # -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._docs

    @property
    def ids(self) -> list[int]:
        """The chunk ids in the index, ascending."""
        return sorted(self._docs)

    def tokenize(self, text: str) -> list[str]:
        """The tokens BM25 sees for ``text`` (see the module docstring)."""
        return self._tokenize(text)

    def add(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Add chunks, replacing any chunk that already has the same id.

        Raises:
            ValueError: ``ids`` and ``texts`` differ in length.
        """
        if len(ids) != len(texts):
            raise ValueError(f"add() got {len(ids)} ids but {len(texts)} texts; pass one id per text")
        for chunk_id, text in zip(ids, texts, strict=True):
            self._docs[int(chunk_id)] = self._encode(text, grow=True)
        if len(ids):
            self._model = None

    def delete(self, ids: Iterable[int]) -> int:
        """Remove chunks; ids that are not present are ignored. Returns how many were removed."""
        removed = 0
        for chunk_id in ids:
            if self._docs.pop(int(chunk_id), None) is not None:
                removed += 1
        if removed:
            self._model = None
        return removed

    def clear(self) -> None:
        """Remove every chunk (the vocabulary is kept; it does not affect scores)."""
        self._docs.clear()
        self._model = None

    def _encode(self, text: str, grow: bool = False) -> np.ndarray:
        """Vocabulary ids of a text's terms: one dictionary look-up per word once a word was seen (the analyzer,
        the stemmer and the vocabulary only for new words). ``grow`` (a chunk) adds new terms to the vocabulary;
        otherwise (a query) terms no chunk has are dropped."""
        vocab, word_ids, terms = self._vocab, self._word_ids, self._tokenize.terms
        out: list[int] = []
        for word in self._tokenize.words(text):
            ids = word_ids.get(word)
            if ids is None:
                if not grow:
                    out.extend(vocab[t] for t in terms(word) if t in vocab)
                    continue
                ids = tuple(vocab.setdefault(t, len(vocab)) for t in terms(word))
                if len(word_ids) < _CACHE_LIMIT:
                    word_ids[word] = ids
            out.extend(ids)
        return np.array(out, dtype=np.int32)

    # -- search
    # --------------------------------------------------------------------------------------------------
    def _ensure_model(self) -> Any:
        if self._model is not None:
            return self._model
        import bm25s

        _quiet_bm25s_logger()

        ids = np.fromiter(sorted(self._docs), dtype=np.int64, count=len(self._docs))
        model = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        # bm25s needs every vocabulary id to be a row of its matrix; ids are dense 0..V-1 by construction.
        vocab_ids = {i: i for i in range(len(self._vocab))}
        if len(ids):
            corpus = [self._docs[int(i)].tolist() for i in ids]
            model.index((corpus, vocab_ids), create_empty_token=False, show_progress=False)
        self._model = model
        self._positions = ids
        logger.debug("rebuilt the BM25 index over %d chunks", len(ids))
        return model

    def search(self, query: str, k: int = 10,
               allowed_ids: Collection[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best chunks for ``query`` as ``(chunk_id, score)``, best first.

        Only chunks that share a token with the query (score > 0) are returned; ties are broken by chunk id.

        Args:
            query: Free text, tokenised like the documents.
            k: How many to return.
            allowed_ids: When given, only these chunk ids can be returned (a metadata filter's result).
        """
        return self.search_batch([query], k, allowed_ids)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10,
                     allowed_ids: Collection[int] | None = None) -> list[list[tuple[int, float]]]:
        """:meth:`search` for many queries with one filter."""
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        if not self._docs:
            return [[] for _ in queries]
        model = self._ensure_model()
        mask = None
        if allowed_ids is not None:
            allowed = np.fromiter((int(i) for i in allowed_ids), dtype=np.int64)
            mask = np.isin(self._positions, allowed)
            if not mask.any():
                return [[] for _ in queries]
        results: list[list[tuple[int, float]]] = []
        for query in queries:
            token_ids = self._encode(query)
            if token_ids.size == 0:
                results.append([])
                continue
            scores = np.asarray(model.get_scores_from_ids(token_ids.tolist()), dtype=np.float64)
            candidates = np.flatnonzero(scores > 0) if mask is None else np.flatnonzero((scores > 0) & mask)
            if candidates.size > k:
                # partition on score, then an exact sort with ties broken by chunk id
                cut = np.partition(scores[candidates], candidates.size - k)[candidates.size - k]
                candidates = candidates[scores[candidates] >= cut]
            order = np.lexsort((self._positions[candidates], -scores[candidates]))[:k]
            chosen = candidates[order]
            results.append([(int(self._positions[i]), float(scores[i])) for i in chosen])
        return results

    # -- persistence
    # ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the index to ``path/bm25.npz`` (the folder is created if needed), atomically.

        Everything is one file, replaced with ``os.replace``, so a reader never sees parts of two versions.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.fromiter(sorted(self._docs), dtype=np.int64, count=len(self._docs))
        lengths = np.fromiter((self._docs[int(i)].size for i in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        token_ids = (np.concatenate([self._docs[int(i)] for i in ids]) if len(ids)
                     else np.empty(0, dtype=np.int32)).astype(np.int32, copy=False)
        vocab = [""] * len(self._vocab)
        for token, i in self._vocab.items():
            vocab[i] = token
        manifest = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "num_chunks": len(ids),
                    "vocab_size": len(vocab), "generation": self.generation}
        # tokens are runs of word characters, so a newline can separate them
        vocab_bytes = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
        manifest_bytes = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, manifest=manifest_bytes, vocab=vocab_bytes, chunk_ids=ids, offsets=offsets,
                         token_ids=token_ids)
            os.replace(tmp, folder / _FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """True when the folder ``path`` holds a saved BM25 index."""
        return (Path(path) / _FILE).is_file()

    @classmethod
    def load(cls, path: str | Path) -> BM25Index:
        """Read an index written by :meth:`save` from the folder ``path``.

        Raises:
            FileNotFoundError: ``path`` holds no BM25 index.
            ValueError: The file is from another format version or is inconsistent.
        """
        folder = Path(path)
        if not cls.exists(folder):
            raise FileNotFoundError(f"no BM25 index in {str(folder)!r} ({_FILE} is missing); build one with "
                                    "BM25Index.add(...) and save(), or re-run `qwen3-rag index`")
        with np.load(folder / _FILE, allow_pickle=False) as data:
            manifest = json.loads(data["manifest"].tobytes().decode("utf-8"))
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(f"BM25 index in {str(folder)!r} has format version {version!r}; "
                                 "this qwen3-rag "
                                 f"reads version {FORMAT_VERSION}. Rebuild the index with this version.")
            vocab_text = data["vocab"].tobytes().decode("utf-8")
            ids, offsets, token_ids = data["chunk_ids"], data["offsets"], data["token_ids"]
        vocab = vocab_text.split("\n") if manifest.get("vocab_size") else []
        if (len(offsets) != len(ids) + 1 or (len(ids) and offsets[-1] != len(token_ids))
                or len(vocab) != manifest.get("vocab_size")):
            raise ValueError(f"BM25 index in {str(folder)!r} is inconsistent; delete {_FILE} to rebuild it")
        index = cls(BM25Config.from_dict(manifest.get("config", {})))
        index._vocab = {token: i for i, token in enumerate(vocab)}
        index._docs = {int(c): token_ids[offsets[j]:offsets[j + 1]].copy() for j, c in enumerate(ids)}
        index.generation = manifest.get("generation")
        return index


#: Sidecars registered with open indexes: a second attach() reuses the first instead of registering twice.
_ATTACHED: weakref.WeakKeyDictionary[Any, BM25Sidecar] = weakref.WeakKeyDictionary()


class BM25Sidecar:
    """Keeps a :class:`BM25Index` in step with an :class:`~qwen3_rag.indexers.index.Index`.

    The index calls :meth:`on_commit` after every commit of its store with the chunk ids added and removed, and
    the sidecar applies them in memory; :meth:`flush`, called whenever the index writes its FAISS file (not
    between the intermediate commits of a bulk load), saves it under ``index.sidecar_dir("bm25")`` tagged with
    the store generation. When it is attached and finds no saved BM25 index, or one of another generation (a crash
    between the store commit and the BM25 write, or an index written without the sidecar), it rebuilds from
    ``index.iter_chunks()``.

    Example:
        >>> sidecar = BM25Sidecar.attach(index)       # doctest: +SKIP
        >>> index.upsert(docs)                        # doctest: +SKIP  (BM25 follows)
        >>> sidecar.bm25.search("query", k=10)        # doctest: +SKIP
    """

    name = "bm25"

    def __init__(self, bm25: BM25Index, folder: Path | None = None) -> None:
        self.bm25 = bm25
        self.folder = folder
        #: The generation last written to ``folder`` (None: nothing written by this sidecar yet).
        self.saved_generation: int | None = bm25.generation if folder is not None else None
        #: Set when a later attach() replaced this sidecar: its on_commit then does nothing.
        self.retired = False

    @classmethod
    def attach(cls, index: Any, config: BM25Config | None = None, *, register: bool = True,
               persist: bool = True) -> BM25Sidecar:
        """Load (or rebuild) the BM25 index of ``index`` and, with ``register``, keep it in step from now on.

        Args:
            index: An open :class:`~qwen3_rag.indexers.index.Index`.
            config: BM25 settings. None keeps the saved settings (or the defaults for a new BM25 index);
                settings that differ from the saved ones force a rebuild.
            register: Register the sidecar with ``index.register_sidecar`` (needs a writable index).
            persist: Save a rebuilt index and every later change to disk (off for read-only use).
        """
        generation = int(index.generation)
        existing = _ATTACHED.get(index)
        if existing is not None and existing.bm25.generation == generation and (
                config is None or config == existing.bm25.config):
            return existing  # already registered with this index and in step: do not register twice
        if existing is not None and register:
            existing.retired = True  # replaced below; the index cannot unregister it, so it goes quiet
        source = Path(index.sidecar_dir(cls.name))
        folder = source if persist else None
        bm25: BM25Index | None = None
        if BM25Index.exists(source):
            try:
                bm25 = BM25Index.load(source)
            except (ValueError, OSError, KeyError) as exc:
                logger.warning("BM25 index in %s is unreadable (%s); rebuilding it", source, exc)
        reason = None
        if bm25 is None:
            reason = "no BM25 index saved"
        elif bm25.generation != generation:
            reason = f"the BM25 index is at generation {bm25.generation}, the store at {generation}"
        elif config is not None and config != bm25.config:
            reason = "the BM25 settings changed"
        if reason is not None:
            logger.info("building the BM25 index of %s (%s)", index.path, reason)
            bm25 = BM25Index(config or (bm25.config if bm25 is not None else None))
            ids: list[int] = []
            texts: list[str] = []
            for chunk_id, text in index.iter_chunks():
                ids.append(int(chunk_id))
                texts.append(text)
                if len(ids) >= 4096:
                    bm25.add(ids, texts)
                    ids, texts = [], []
            bm25.add(ids, texts)
            bm25.generation = generation
            if folder is not None:
                bm25.save(folder)
        assert bm25 is not None
        sidecar = cls(bm25, folder)
        if register:
            index.register_sidecar(sidecar)
            try:
                _ATTACHED[index] = sidecar
            except TypeError:  # an index type that cannot be weakly referenced: nothing to remember
                pass
        return sidecar

    def on_commit(self, index: Any, generation: int, added_ids: Collection[int],
                  removed_ids: Collection[int]) -> None:
        """Apply one store commit in memory: drop ``removed_ids``, add the texts of ``added_ids``."""
        if self.retired:
            return
        self.bm25.delete(removed_ids)
        added = [int(i) for i in added_ids]
        for start in range(0, len(added), 4096):
            pairs = index.chunk_texts(added[start:start + 4096])
            self.bm25.add([i for i, _ in pairs], [text for _, text in pairs])
        self.bm25.generation = int(generation)

    def flush(self, index: Any = None) -> None:
        """Save the BM25 index if it changed since it was last saved (nothing to do without a folder)."""
        if self.retired or self.folder is None or self.saved_generation == self.bm25.generation:
            return
        self.bm25.save(self.folder)
        self.saved_generation = self.bm25.generation
