"""all-MiniLM-L6-v2 through Embedder equals sentence-transformers' own encoding."""

from __future__ import annotations

import numpy as np


def test_minilm_equals_sentence_transformers(minilm_embedder, minilm_path):
    from sentence_transformers import SentenceTransformer

    texts = ["A man is eating food.", "", "The new movie is awesome " * 80, "Ein Mann isst.", "x"]
    st = SentenceTransformer(minilm_path, device="cpu")
    expected = st.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    ours = minilm_embedder.embed_documents(texts)
    assert minilm_embedder.pooling == "mean" and minilm_embedder.dim == 384 and minilm_embedder.max_length == 256
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # no instruction for a model that was not trained with one
    np.testing.assert_allclose(minilm_embedder.embed_queries(texts), expected, atol=1e-5)
