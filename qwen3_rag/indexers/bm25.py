"""A BM25 keyword index over chunk ids, kept in step with upserts and deletes, stored without pickle.

Scoring is bm25s (Lucene's BM25 by default). bm25s builds a static index, so this class keeps every chunk's
token ids and rebuilds the bm25s index lazily on the first search after a change, from the stored token ids
(tokenisation is not repeated).

Tokenisation (:meth:`BM25Index.tokenize`): NFKC, lower case, words of two or more word characters (bm25s's
default ``\\w\\w+``), English stop words removed, Snowball stemming (PyStemmer) -- with these settings SciFact
scores exactly what ``bm25s.tokenize(stopwords="en", stemmer=Stemmer("english"))`` scores. Runs of CJK characters
(Chinese, Japanese kana, Korean Hangul), which have no spaces between words, become character unigrams plus
bigrams, where bm25s's default keeps a whole clause as one token (see BENCHMARKS.md, 5. Retrieval quality).
A code identifier (``write_boolean``, ``writeBoolean``) is kept whole and also gives its parts
(``write``, ``boolean``), so a question in words finds the code that names them; prose has almost no such words.

On disk: one ``.npz`` file (``np.savez``, no pickle; a local index publishes it as ``bm25.<generation>.npz``
through :class:`BM25Component`) with the arrays ``manifest`` (UTF-8 JSON: format version, BM25 and tokeniser
settings, counts), ``vocab`` (UTF-8, newline-separated tokens, position = token id),
``chunk_ids`` (int64), ``offsets`` (int64, n + 1) and ``token_ids`` (int32).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import unicodedata
import zipfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qwen3_rag.indexers.manifest import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["BM25Component", "BM25Config", "BM25Index", "FORMAT_VERSION", "matching_spans"]

FORMAT_VERSION = 2  # 2: the config has ``identifiers``; a version-1 file reads as ``identifiers="none"``
_READABLE = (1, 2)
_FILE = "bm25.npz"

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{_CJK_RANGES}]+")
_CACHE_LIMIT = 1_000_000  # words whose vocabulary ids BM25Index remembers
# a CJK run, or two or more word characters that are not CJK ([^\W...]: a class, no look-ahead per character)
_TOKEN = re.compile(f"[{_CJK_RANGES}]+|[^\\W{_CJK_RANGES}]{{2,}}")
# where an identifier splits: underscores, and a lower-case letter before a capital (writeBoolean); not inside a
# run of capitals (HTTPServer), which in prose cuts plurals of acronyms (SNPs, URLs) into noise; ASCII case only
_IDENTIFIER_CUT = re.compile(r"_+|(?<=[a-z])(?=[A-Z])")
# where an identifier is: found first (rare in prose, so a text is scanned once), then widened to its word
_IDENTIFIER_MARK = re.compile(r"_|[a-z][A-Z]")
_WORD_TAIL = re.compile(f"[^\\W{_CJK_RANGES}]*")


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
        identifiers: ``"split"``: a word with underscores or inner capitals also gives its parts
            (``parse_json_file`` -> ``parse_json_file``, ``parse``, ``json``, ``file``); ``"none"``: words stay
            whole, as bm25s does (and as indexes written before the setting existed do).
    """

    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stemmer: str | None = "english"
    stopwords: Literal["en"] | None = "en"
    cjk: Literal["unigram+bigram", "bigram", "none"] = "unigram+bigram"
    identifiers: Literal["split", "none"] = "split"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BM25Config:
        """The settings stored with an index; a setting added later takes the value that matches what an index
        written without it holds."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{**_BEFORE_SETTING, **{k: v for k, v in data.items() if k in known}})


#: What an index written before a setting existed did, by setting.
_BEFORE_SETTING: dict[str, Any] = {"identifiers": "none"}


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
        if config.identifiers not in ("split", "none"):
            raise ValueError(f"identifiers must be 'split' or 'none', got {config.identifiers!r}")

    def words(self, text: str) -> list[str]:
        """The words of a text (NFKC, lower case): CJK runs, or runs of two or more other word characters; then,
        with ``identifiers="split"``, the parts of each identifier among them."""
        text = unicodedata.normalize("NFKC", text)
        words = _TOKEN.findall(text.lower())
        if self.config.identifiers == "split":
            # BM25 counts terms, so the parts may follow all the words; a part is cut from the original case and
            # lower-cased into words as the text is (U+0130 lower-cases to two characters)
            words.extend(word for identifier in _identifiers(text) for part in _IDENTIFIER_CUT.split(identifier)
                         for word in _TOKEN.findall(part.lower()))
        return words

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


def _identifiers(text: str) -> Iterator[str]:
    """The words of ``text`` (runs of non-CJK word characters) that hold an identifier cut, each once per
    occurrence."""
    end = 0
    for mark in _IDENTIFIER_MARK.finditer(text):
        if mark.start() < end:  # another cut of the word just given
            continue
        start = mark.start()
        while start > end and _is_word_character(text[start - 1]):
            start -= 1
        end = _WORD_TAIL.match(text, mark.start()).end()  # type: ignore[union-attr]  # matches the empty string
        yield text[start:end]


def _is_word_character(char: str) -> bool:
    """What ``[^\\W<CJK>]`` matches: ``\\w`` (alphanumeric or underscore) outside the CJK ranges."""
    return (char.isalnum() or char == "_") and not _CJK_RUN.match(char)


@functools.lru_cache(maxsize=8)
def _tokenizer(config: BM25Config) -> _Tokenizer:
    return _Tokenizer(config)


def matching_spans(text: str, query: str, config: BM25Config | None = None) -> list[tuple[int, int]]:
    """Where ``text`` holds the query's BM25 terms: ``(start, end)`` character offsets of each word (or, in CJK
    runs, each character or pair) whose terms are among the query's, in order; what a search page highlights.

    Matching is BM25's own (:meth:`BM25Index.tokenize`): ``"Logs are rotated"`` matches the query ``"log
    rotation"`` through stemming, stop words match nothing.

    Example:
        >>> matching_spans("Logs are rotated nightly.", "when are logs rotated?")
        [(0, 4), (9, 16)]
    """
    tokenize = _tokenizer(config or BM25Config())
    wanted = set(tokenize(query))
    if not wanted:
        return []
    spans: list[tuple[int, int]] = []
    for match in _TOKEN.finditer(text):
        word = match.group()
        if _CJK_RUN.match(word[0]):
            spans.extend(_cjk_spans(word, match.start(), wanted, tokenize.config.cjk))
        elif any(term in wanted for part in tokenize.words(word) for term in tokenize.terms(part)):
            spans.append((match.start(), match.end()))
    return spans


def _cjk_spans(run: str, offset: int, wanted: set[str], cjk: str) -> list[tuple[int, int]]:
    """The characters of a CJK run that a wanted unigram or bigram (or, for ``cjk="none"``, the whole run) covers,
    as spans merged where they touch."""
    chars = [unicodedata.normalize("NFKC", c).lower() for c in run]
    if cjk == "none":
        return [(offset, offset + len(run))] if "".join(chars) in wanted else []
    marked = [False] * len(run)
    for i, char in enumerate(chars):
        if char in wanted:
            marked[i] = True
        if i + 1 < len(chars) and char + chars[i + 1] in wanted:
            marked[i] = marked[i + 1] = True
    spans: list[tuple[int, int]] = []
    for i, on in enumerate(marked):
        if on and spans and spans[-1][1] == offset + i:
            spans[-1] = (spans[-1][0], offset + i + 1)
        elif on:
            spans.append((offset + i, offset + i + 1))
    return spans


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
    def to_bytes(self) -> bytes:
        """The index as one ``.npz`` file's bytes (no pickle)."""
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
                    "vocab_size": len(vocab)}
        # tokens are runs of word characters, so a newline can separate them
        vocab_bytes = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
        manifest_bytes = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, manifest=manifest_bytes, vocab=vocab_bytes, chunk_ids=ids, offsets=offsets,
                 token_ids=token_ids)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BM25Index:
        """Read :meth:`to_bytes`' output.

        Raises:
            ValueError: the bytes are not a BM25 index of this format, or are inconsistent.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                manifest = json.loads(arrays["manifest"].tobytes().decode("utf-8"))
                version = manifest.get("format_version")
                if version not in _READABLE:
                    raise ValueError(f"BM25 format version {version!r}; this qwen3-rag reads "
                                     f"{', '.join(map(str, _READABLE))}")
                vocab_text = arrays["vocab"].tobytes().decode("utf-8")
                ids, offsets, token_ids = arrays["chunk_ids"], arrays["offsets"], arrays["token_ids"]
        except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"not a BM25 index ({type(exc).__name__}: {exc})") from None
        vocab = vocab_text.split("\n") if manifest.get("vocab_size") else []
        n_vocab = len(vocab)
        if (len(offsets) != len(ids) + 1 or (len(ids) and offsets[-1] != len(token_ids))
                or n_vocab != manifest.get("vocab_size") or np.any(np.diff(offsets) < 0)
                or (token_ids.size and (token_ids.min() < 0 or token_ids.max() >= n_vocab))):
            raise ValueError("the BM25 index is inconsistent")
        index = cls(BM25Config.from_dict(manifest.get("config", {})))
        index._vocab = {token: i for i, token in enumerate(vocab)}
        index._docs = {int(c): token_ids[offsets[j]:offsets[j + 1]].copy() for j, c in enumerate(ids)}
        return index

    def save(self, path: str | Path) -> None:
        """Write the index to ``path/bm25.npz`` (the folder is created if needed), atomically."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / _FILE, self.to_bytes())

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
                                    "BM25Index.add(...) and save()")
        try:
            return cls.from_bytes((folder / _FILE).read_bytes())
        except ValueError as exc:
            raise ValueError(f"{str(folder / _FILE)!r}: {exc}; delete it to rebuild it") from None


class BM25Component:
    """The BM25 index of a local index, as a component kept in step with the store
    (:mod:`qwen3_rag.indexers.derived`): published as ``bm25.<generation>.npz`` beside it.

    Args:
        config: BM25 settings; None keeps the published ones (the defaults for a new index). Settings that differ
            from the published ones rebuild it.
    """

    name = "bm25"
    suffix = "npz"
    persisted = True

    def __init__(self, config: BM25Config | None = None) -> None:
        self.config = config
        self.bm25 = BM25Index(config)

    def rebuild(self, store: Any) -> None:
        bm25 = BM25Index(self.config or self.bm25.config)
        self._add(bm25, store.iter_chunks())
        self.bm25 = bm25

    @staticmethod
    def _add(bm25: BM25Index, pairs: Iterable[tuple[int, str]]) -> None:
        ids: list[int] = []
        texts: list[str] = []
        for chunk_id, text in pairs:
            ids.append(chunk_id)
            texts.append(text)
            if len(ids) >= 4096:
                bm25.add(ids, texts)
                ids, texts = [], []
        bm25.add(ids, texts)

    def apply(self, store: Any, removed: np.ndarray, min_id: int) -> None:
        self.bm25.delete(removed.tolist())
        self._add(self.bm25, store.iter_chunks(min_id=min_id))

    def dump(self) -> bytes:
        return self.bm25.to_bytes()

    def ids(self) -> np.ndarray:
        return np.asarray(self.bm25.ids, dtype=np.int64)

    def load(self, data: bytes, store: Any) -> None:
        bm25 = BM25Index.from_bytes(data)
        if self.config is not None and bm25.config != self.config:
            raise ValueError("the BM25 settings changed")
        self.bm25 = bm25
