"""Distributed ingestion on Ray Data: CPU actors read and chunk, one model per GPU embeds, the store is written as a
single process writes it.

:func:`~qwen3_rag.pipelines.ingest.ingest` with ``ray=`` (``qwen3-rag index ... --ray ADDRESS``) lists the files on
the driver and runs the stages of :mod:`qwen3_rag.pipelines.ray_stages` as one Ray Data pipeline:

1. ``PrepareStage``, an autoscaling pool of CPU actors: the project's loaders read each file, documents whose
   content hash the index holds are skipped there (the driver takes the stored hashes from the index once, before
   the run, and shares them through Ray's object store), the others are chunked with the index's settings and the
   model's tokenizer, keeping each chunk's token ids;
2. ``EmbedStage``, a pool of actors (``actors``, ``gpus_per_actor``), each holding the project's embedder built from
   the index's model record (checked against it) and fed the chunker's token ids: the same model code and inputs
   as a single process;
3. writing: the rows come back to the driver in the order of the sources and go through the one write loop
   (:class:`~qwen3_rag.pipelines.writing.DocumentWriter`): the same documents, chunks, chunk ids, commits, parts,
   progress, failures and pruning as a run without Ray. A backend that takes many writers
   (:attr:`StorageBackend.concurrent_writers <qwen3_rag.protocols.StorageBackend.concurrent_writers>`) is written
   from the workers instead (``WriteStage``), the driver writing only the documents split between two batches.

A worker or actor that dies is restarted by Ray and its batch run again (Ray Data retries actor tasks); a run that
is stopped keeps what was committed, and the next run skips it, as without Ray.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen3_rag._optional import require
from qwen3_rag.indexers.loaders import LoadReport, iter_files
from qwen3_rag.pipelines.ray_stages import (
    Assembler,
    Embedded,
    EmbedStage,
    PrepareStage,
    Status,
    WriteStage,
    stored_keys,
)
from qwen3_rag.pipelines.writing import DocumentWriter, timed
from qwen3_rag.protocols import StorageBackend, TextEmbedder
from qwen3_rag.retrieval.models import load_embedder
from qwen3_rag.types import Document

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BATCH_TOKENS", "RayOptions", "ingest_on_ray"]

#: Tokens handed to an embedding actor per call (rows: this over the chunk size); the model splits them into
#: forward passes of ``max_tokens_per_batch``.
DEFAULT_BATCH_TOKENS = 65536
#: Files read by one call of a preparing actor (a record file may hold any number of documents).
FILES_PER_CALL = 16
#: Ray Data's largest block for the run: the rows a preparing actor yields reach the embedding actors in blocks of
#: about this size, while it still reads (with Ray's default, 128 MiB, a large record file's rows would wait for
#: the whole file), and about one embedding call's rows each.
BLOCK_BYTES = 2 << 20
_ADDRESSES = "'local', 'auto' or a 'ray://HOST:PORT' address"


@dataclass(frozen=True)
class RayOptions:
    """How ingestion runs on Ray.

    Attributes:
        address: ``"local"``: start Ray on this machine for the run; ``"auto"``: join the running cluster
            (``RAY_ADDRESS``, or the one ``ray start`` began here); ``"ray://HOST:10001"``: a cluster's Ray Client
            address. When this process is already connected to Ray, that connection is used.
        actors: Embedding actors: a number, or ``(min, max)`` for a pool that grows with the work. Default: one per
            ``gpus_per_actor`` GPUs of the cluster, or one on a cluster without GPUs.
        gpus_per_actor: GPUs each embedding actor holds. Default 1 when the cluster has GPUs, else 0 (the model runs
            on the actor's CPU).
        batch_tokens: Tokens handed to an actor per call (as chunks of the index's chunk size).
        embedder: Builds each actor's embedder from the index's model record (the preparing actors use its
            tokenizer to chunk, so it should load its weights on first use, as :class:`~qwen3_rag.Embedder` does);
            default :func:`~qwen3_rag.load_embedder` with the run's device and batch settings.

    Raises:
        ValueError: an address, a number of actors, of GPUs or of tokens that cannot be used.
    """

    address: str = "local"
    actors: int | tuple[int, int] | None = None
    gpus_per_actor: float | None = None
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    embedder: Callable[[Mapping[str, Any]], TextEmbedder] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not (self.address in ("local", "auto")
                                                      or self.address.startswith("ray://")):
            raise ValueError(f"the Ray address must be {_ADDRESSES}, got {self.address!r}")
        low, high = _pool(self.actors)
        if not 1 <= low <= high:
            raise ValueError(f"actors must be a number >= 1 or (min, max) with 1 <= min <= max, got {self.actors!r}")
        if self.gpus_per_actor is not None and not self.gpus_per_actor >= 0:
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")
        if not isinstance(self.batch_tokens, int) or self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be an int >= 1, got {self.batch_tokens!r}")

    @classmethod
    def of(cls, value: RayOptions | str) -> RayOptions:
        """``value`` itself, or the options for an address."""
        return value if isinstance(value, RayOptions) else cls(address=value)


def _pool(actors: int | tuple[int, int] | None) -> tuple[int, int]:
    if actors is None:
        return 1, 1
    if isinstance(actors, int) and not isinstance(actors, bool):
        return actors, actors
    if isinstance(actors, tuple) and len(actors) == 2 and all(isinstance(a, int) for a in actors):
        return actors
    return 0, 0


@dataclass(frozen=True)
class _Plan:
    """The pools for one run on one cluster."""

    actors: tuple[int, int]
    gpus_per_actor: float
    prepare_actors: int
    batch_rows: int
    workers_write: bool

    @classmethod
    def make(cls, options: RayOptions, resources: Mapping[str, float], index: StorageBackend) -> _Plan:
        """Raises ValueError when the cluster cannot hold the embedding actors asked for."""
        gpus, cpus = float(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        if options.actors is not None:
            actors = _pool(options.actors)
        else:
            actors = (max(1, int(gpus // per_actor)),) * 2 if per_actor else (1, 1)
        if per_actor * actors[0] > gpus:
            raise ValueError(f"{actors[0]} embedding actor(s) with {per_actor:g} GPU(s) each need "
                             f"{per_actor * actors[0]:g} GPUs; the Ray cluster has {gpus:g}. Ask for fewer actors "
                             "(--ray-actors), or none of its GPUs (--ray-gpus-per-actor 0)")
        size = index.chunking.chunk_size or int(index.model_info.get("max_length") or 512)
        return cls(actors, per_actor, max(1, cpus - actors[1]), max(1, options.batch_tokens // size),
                   index.concurrent_writers)


def ingest_on_ray(writer: DocumentWriter, sources: Sequence[Path], walk: Mapping[str, Any], loads: LoadReport,
                  options: RayOptions, settings: Mapping[str, Any]) -> None:
    """Feed ``writer`` with the documents of ``sources``, read, chunked and embedded on Ray (see the module).

    Args:
        writer: The write loop, on the index being written.
        sources: Files and folders.
        walk: ``include``, ``exclude``, ``follow_links`` and ``record_fields``, as
            :func:`~qwen3_rag.indexers.loaders.iter_documents` takes them.
        loads: Where skipped and failed files go.
        options: The Ray address and pools.
        settings: How each actor builds its embedder (:func:`~qwen3_rag.load_embedder`'s ``device``,
            ``batch_size``, ``max_tokens_per_batch``, ``compile``).

    Raises:
        ImportError: Ray is not installed (``pip install 'qwen3-rag[ray]'``).
        ValueError: the index's model cannot be rebuilt on the workers, or the cluster cannot hold the actors.
    """
    ray = require("ray", "ray", "distributed ingestion (ray=, --ray)")
    index = writer.index
    if options.embedder is None:
        _check_rebuildable(index)
    files = [{"path": os.fsencode(path), "doc_id": os.fsencode(doc_id)} for path, doc_id in
             iter_files(sources, walk["include"], walk["exclude"], loads, follow_links=walk["follow_links"])]
    if not files:
        return
    with _connected(ray, options.address), _data_context(ray):
        plan = _Plan.make(options, ray.cluster_resources(), index)
        logger.info("ingesting %d files on Ray: %s", len(files), plan)
        dataset = _pipeline(ray, files, plan, options, index, settings, walk.get("record_fields"),
                            writer.commit_every)
        _drain(dataset, writer, loads)


def _check_rebuildable(index: StorageBackend) -> None:
    """Fail on the driver, before Ray starts, when the workers could not build the index's model from its record."""
    try:
        load_embedder(record=index.model_info, device="cpu")  # reads the config and no weights
    except (ValueError, OSError) as exc:
        raise ValueError(f"distributed ingestion builds the index's model on every worker from its record, and "
                         f"this one cannot be built: {exc}; pass RayOptions(embedder=...) to build it") from exc


@contextmanager
def _connected(ray: Any, address: str) -> Iterator[None]:
    """Connected to Ray for the run: an existing connection as it is, else one made here and closed after."""
    if ray.is_initialized():
        yield
        return
    local = {"include_dashboard": False} if address == "local" else {}
    ray.init(address=address, logging_level=logging.WARNING, **local)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars,
             context.print_on_execution_start, context.target_max_block_size)
    # in order: the writer sees the documents as a single process sees them (the same chunk ids, the first of two
    # documents with one id kept); progress is the writer's (documents, chunks, tokens/s)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.target_max_block_size = BLOCK_BYTES
    ray_logger = logging.getLogger("ray.data")  # its notes on each run, unless this run logs at INFO (-v)
    level = ray_logger.level
    if not logger.isEnabledFor(logging.INFO):
        ray_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        (context.execution_options.preserve_order, context.enable_progress_bars,
         context.print_on_execution_start, context.target_max_block_size) = saved
        ray_logger.setLevel(level)


def _pipeline(ray: Any, files: list[dict[str, bytes]], plan: _Plan, options: RayOptions, index: StorageBackend,
              settings: Mapping[str, Any], record_fields: Any, commit_every: int) -> Any:
    data = ray.data
    record = dict(index.model_info)
    dataset = data.from_items(files, override_num_blocks=max(1, math.ceil(len(files) / FILES_PER_CALL)))
    dataset = dataset.map_batches(
        PrepareStage, batch_size=FILES_PER_CALL, batch_format="pyarrow", num_cpus=1,
        compute=data.ActorPoolStrategy(min_size=1, max_size=plan.prepare_actors),
        fn_constructor_kwargs={"record": record, "chunk_size": index.chunking.chunk_size,
                               "chunk_overlap": index.chunking.chunk_overlap, "stored": ray.put(stored_keys(index)),
                               "record_fields": record_fields, "make": options.embedder,
                               "context": index.chunking.context})
    dataset = dataset.map_batches(
        EmbedStage, batch_size=plan.batch_rows, batch_format="pyarrow", num_cpus=1,
        num_gpus=plan.gpus_per_actor or None,
        compute=data.ActorPoolStrategy(min_size=plan.actors[0], max_size=plan.actors[1]),
        fn_constructor_kwargs={"record": record, "location": index.location, "settings": dict(settings),
                               "make": options.embedder})
    if plan.workers_write:
        dataset = dataset.map_batches(
            WriteStage, batch_size=None, batch_format="pyarrow", num_cpus=0.25,  # waits on the store, mostly
            compute=data.ActorPoolStrategy(min_size=1, max_size=plan.actors[1]),
            fn_constructor_kwargs={"location": index.location, "commit_every": commit_every})
    return dataset


def _drain(dataset: Any, writer: DocumentWriter, loads: LoadReport) -> None:
    """Hand the rows, in order, to the writer: documents to write, statuses to count."""
    timings = writer.report.timings
    assembler = Assembler()
    for table in timed(dataset.iter_batches(batch_size=None, batch_format="pyarrow"), timings, "wait"):
        for stage in ("load", "chunk", "embed"):  # worker seconds, summed over the workers
            timings[stage] += float(sum(table.column(f"{stage}_seconds").to_pylist()))
        for _, item in assembler.take(table):
            _hand(writer, loads, item)
    if assembler.open is not None:
        raise RuntimeError(f"the rows of document {assembler.open.document.id!r} stopped before its last chunk")


def _hand(writer: DocumentWriter, loads: LoadReport, item: Status | Embedded | None) -> None:
    if isinstance(item, Embedded):
        writer.add_embedded(item.document, item.chunks, item.vector_rows(writer.index.dim), tokens=item.tokens)
    elif item is None:
        raise RuntimeError("a document's rows came out of order; distributed ingestion needs Ray Data's "
                           "preserve_order")
    elif item.kind == "failed":
        loads.fail(item.source, item.reason)
    elif item.kind == "skipped":
        loads.skip(item.source, item.reason)
    else:  # unchanged, or written by a worker
        writer.add_handled(Document(id=item.doc_id, text="", source=item.source), item.stats, tokens=item.tokens)
