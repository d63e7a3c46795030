"""What the model reads for each chunk of the write loop, as text or as token ids.

:class:`ChunkInputs` decides the text (a chunk alone, or after a line with its document's title and heading path);
:func:`token_framer` decides whether the chunker's token ids can be fed to the model directly, so that ingestion
never tokenizes a chunk twice. The single-process write loop (:mod:`~qwen3_rag.pipelines.writing`) and the Ray
stages (:mod:`~qwen3_rag.pipelines.ray_stages`) both build their inputs here, so the two give the same index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from qwen3_rag.indexers.chunking import ChunkContext, Chunker
from qwen3_rag.indexers.headings import chunk_contexts
from qwen3_rag.protocols import TextEmbedder, TokenEmbedder
from qwen3_rag.types import Chunk, Document

__all__ = ["ChunkInputs", "Framer", "token_framer"]

Framer = Callable[[list[list[int]]], list[list[int]]]


def token_framer(embedder: TextEmbedder, chunker: Chunker | None) -> Framer | None:
    """``embedder.ids_from_content`` when the embedder can be fed the token ids the chunker makes (its tokenizer
    is the chunker's and its special tokens form a fixed frame), else None: then the texts are embedded."""
    if chunker is None or chunker.tokenizer is None or not isinstance(embedder, TokenEmbedder) \
            or chunker.tokenizer is not embedder.tokenizer or embedder.ids_from_content([]) is None:
        return None
    return cast(Framer, embedder.ids_from_content)


class ChunkInputs:
    """What the model reads for each chunk: the one place that decides it.

    With ``context="title+headings"`` a chunk is read after a first line holding its document's title and its
    heading path (:func:`~qwen3_rag.indexers.headings.chunk_contexts`), which a chunk cut from the middle of a long
    document has lost; with ``"none"`` it is read alone. The stored chunk keeps its own text and offsets either
    way. Token ids and texts give the same input: the context line ends in a newline, where every tokenizer
    starts a new token.

    Args:
        context: The index's :attr:`ChunkingConfig.context <qwen3_rag.indexers.chunking.ChunkingConfig.context>`.
        chunker: The chunker whose tokenizer made the chunks' token ids (needed for :meth:`ids`).
    """

    def __init__(self, context: ChunkContext, chunker: Chunker | None = None) -> None:
        self.context = context
        self.chunker = chunker

    def _lines(self, document: Document, chunks: Sequence[Chunk]) -> list[str]:
        return chunk_contexts(document, chunks) if self.context != "none" else [""] * len(chunks)

    def texts(self, document: Document, chunks: Sequence[Chunk]) -> list[str]:
        """The text the model reads for each chunk."""
        return [f"{line}\n{c.text}" if line else c.text
                for line, c in zip(self._lines(document, chunks), chunks, strict=True)]

    def ids(self, document: Document, chunks: Sequence[Chunk], content_ids: list[list[int]]) -> list[list[int]]:
        """The content token ids of :meth:`texts` from the chunks' own ids (``content_ids``, as the chunker made
        them): only the context lines are tokenized, in one call."""
        lines = self._lines(document, chunks)
        todo = [i for i, line in enumerate(lines) if line]
        if not todo:
            return content_ids
        if self.chunker is None:
            raise ValueError("ChunkInputs.ids needs the chunker that tokenized the chunks")
        heads = self.chunker.token_ids([lines[i] + "\n" for i in todo])
        out = list(content_ids)
        for i, head in zip(todo, heads, strict=True):
            out[i] = [*head, *out[i]]
        return out
