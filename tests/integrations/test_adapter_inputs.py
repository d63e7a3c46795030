"""Bad input through the framework adapters: a clear ValueError naming the item, and nothing of the call written;
the metadata rule (:func:`qwen3_rag.types.check_metadata`) the same in both adapters."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")  # the `langchain` and `llamaindex` extras; CI installs them
pytest.importorskip("llama_index.core")
from langchain_core.embeddings import DeterministicFakeEmbedding
from llama_index.core.schema import TextNode

from qwen3_rag.integrations.langchain import Qwen3VectorStore as LangChainStore
from qwen3_rag.integrations.llamaindex import Qwen3VectorStore as LlamaIndexStore

#: Metadata each adapter must refuse, with what the error must say about it.
BAD_METADATA = [
    ({1: "x"}, r"metadata has the key 1 \(int\); metadata keys must be str"),
    ({"score": math.nan}, r"\['score'\] = nan; metadata numbers must be finite"),
    ({"score": math.inf}, r"\['score'\] = inf"),
    ({"when": dt.datetime(2024, 1, 2)}, r"\['when'\].*isoformat"),
    ({"raw": b"bytes"}, r"\['raw'\].*decode"),
    ({"tags": {"a", "b"}}, r"\['tags'\].*sorted"),
    ({"deep": {"x": [object()]}}, r"\['deep'\]\['x'\]\[0\]"),
    ({"big": 2**64}, r"\['big'\].*64-bit"),
]


class NaNOn(DeterministicFakeEmbedding):
    """A LangChain embedding that returns NaN for one text (a model that overflowed)."""

    poison: str = "poison"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[math.nan] * self.size if t == self.poison else v
                for t, v in zip(texts, super().embed_documents(texts), strict=True)]


@pytest.fixture()
def lc_store(tmp_path: Path) -> Any:
    store = LangChainStore(NaNOn(size=8), tmp_path / "lc")
    store.add_texts(["kept one", "kept two"], [{"n": 1}, {"n": 2}], ids=["k1", "k2"])
    yield store
    store.close()


def unchanged(store: Any) -> None:
    assert store.index.count().documents == 2 and {d.id for d in store.get_by_ids(["k1", "k2", "new"])} == {"k1", "k2"}


@pytest.mark.parametrize("text", [None, 3, b"bytes", ["a list"]])
def test_langchain_refuses_a_text_that_is_not_a_str(lc_store: Any, text: Any) -> None:
    got = "None" if text is None else f"a {type(text).__name__} "
    with pytest.raises(ValueError, match=rf"texts\[1\] is {got}.*every text must be a str"):
        lc_store.add_texts(["fine", text, "fine too"], ids=["new", "bad", "new2"])
    unchanged(lc_store)


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA)
def test_langchain_refuses_metadata_that_breaks_the_rule(lc_store: Any, metadata: dict[Any, Any],
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=r"metadatas\[1\]: .*" + message):
        lc_store.add_texts(["fine", "bad"], [{"ok": True}, metadata], ids=["new", "bad"])
    unchanged(lc_store)


def test_langchain_refuses_nan_vectors_naming_the_text(lc_store: Any) -> None:
    texts = [f"text {i}" for i in range(600)] + ["poison"]  # the bad one in the third batch of 256
    with pytest.raises(ValueError, match=r"texts\[600\] \(id 'p'\): the vector of its chunk 0 \('poison'\) holds NaN "
                                         r"or infinite values.*nothing was written"):
        lc_store.add_texts(texts, ids=[f"t{i}" for i in range(600)] + ["p"])
    unchanged(lc_store)


def test_langchain_converts_what_json_holds_exactly(lc_store: Any) -> None:
    lc_store.add_texts(["tuple and numpy"], [{"pair": (1, 2), "n": np.int64(3), "x": np.float32(0.5)}], ids=["new"])
    assert lc_store.get_by_ids(["new"])[0].metadata == {"pair": [1, 2], "n": 3, "x": 0.5}


def _node(node_id: str, vector: list[float], **metadata: Any) -> TextNode:
    return TextNode(id_=node_id, text=f"text of {node_id}", metadata=metadata, embedding=vector)


@pytest.fixture()
def li_store(tmp_path: Path) -> Any:
    store = LlamaIndexStore(tmp_path / "li")
    store.add([_node("k1", [1.0, 0, 0, 0]), _node("k2", [0, 1.0, 0, 0])])
    yield store
    store.close()


def li_unchanged(store: Any) -> None:
    assert store.client.count().documents == 2 and [n.node_id for n in store.get_nodes(["k1", "k2", "new"])] == \
        ["k1", "k2"]


@pytest.mark.parametrize(("metadata", "message"), [m for m in BAD_METADATA if not isinstance(next(iter(m[0])), int)])
def test_llamaindex_refuses_metadata_that_breaks_the_rule(li_store: Any, metadata: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=r"node 'bad': .*" + message):
        li_store.add([_node("new", [0, 0, 1.0, 0]), _node("bad", [0, 0, 0, 1.0], **metadata)])
    li_unchanged(li_store)


@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0])
def test_llamaindex_refuses_a_vector_without_direction_naming_the_node(li_store: Any, value: float) -> None:
    what = "is all zeros" if value == 0 else "holds NaN or infinite values"
    with pytest.raises(ValueError, match=rf"node 'bad': the vector of its chunk 0 .* {what}.*nothing was written"):
        li_store.add([_node("new", [0, 0, 1.0, 0]), _node("bad", [value, value, 0, 0])])
    li_unchanged(li_store)


def test_llamaindex_refuses_embeddings_of_different_lengths(li_store: Any) -> None:
    with pytest.raises(ValueError, match=r"node 'bad' has an embedding of 3 values, node 'new' one of 4"):
        li_store.add([_node("new", [0, 0, 1.0, 0]), _node("bad", [1.0, 0, 0])])
    li_unchanged(li_store)
