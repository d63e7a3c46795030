"""Thin adapters over the core for host frameworks: :mod:`qwen3_rag.integrations.langchain` (extra
``langchain``) and :mod:`qwen3_rag.integrations.llamaindex` (extra ``llamaindex``).

Importing this package imports no framework; each submodule checks for its extra when it is imported.
"""
