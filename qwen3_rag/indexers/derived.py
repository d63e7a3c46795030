"""What a local index derives from its store and keeps in step: the vector search structure and sidecars such as
the BM25 index.

The store is the single source of truth; a derived component is a cache of it. Each component is held in memory at
some store generation and brought up to the newest commit by a *catch-up*: drop the chunk ids the commits since
then removed (the store logs them) and add the chunks whose ids are past its *watermark* (ids only grow, so those
are exactly the chunks added since). Writers catch up after each commit, readers before each search, so both see
the last commit, whatever the writer is in the middle of.

A writer *publishes* a component's file (``<name>.<generation>.<suffix>``) when it commits with ``publish=True``
and on close, and records the file's generation, watermark, size and SHA-256 in the store. Opening loads the
recorded file only when those match, then catches up from it; a missing, damaged or foreign file is rebuilt from
the store (a writer logs a WARNING and publishes it again), so a damaged file can cost time but never change an
answer. Components whose file would only copy the store (an exact ``Flat`` vector index) are rebuilt from it
instead of published.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qwen3_rag.indexers.manifest import IndexDamagedError, atomic_write
from qwen3_rag.indexers.store import Store

logger = logging.getLogger(__name__)

#: Removals logged before the oldest are forgotten (readers older than that rebuild their state).
REMOVALS_KEPT = 1_000_000


class Component(Protocol):
    """One derived structure. ``name`` is its key in the store's records and the stem of its file."""

    name: str
    suffix: str

    @property
    def persisted(self) -> bool:
        """Whether :meth:`dump` gives a file (False: cheaper rebuilt from the store)."""

    def rebuild(self, store: Store) -> None:
        """Build from every chunk of ``store``."""

    def apply(self, store: Store, removed: np.ndarray, min_id: int) -> None:
        """Catch up: drop the ``removed`` chunk ids, add the stored chunks whose id is >= ``min_id``."""

    def dump(self) -> bytes | None:
        """The file content, or None when this state is cheaper rebuilt from the store than stored."""

    def load(self, data: bytes, store: Store) -> None:
        """Restore from :meth:`dump`'s bytes (``store`` at their generation or later).

        Raises:
            ValueError: the bytes are not a valid dump.
        """

    def ids(self) -> np.ndarray:
        """The chunk ids it holds (deleted ones left out)."""


class _Held:
    """A component, the store state it reflects, and whether its published file is behind it."""

    def __init__(self, component: Component, generation: int, watermark: int, dirty: bool) -> None:
        self.component = component
        self.generation = generation
        self.watermark = watermark
        self.dirty = dirty


class _Missing(Exception):
    """A recorded file is gone: a writer replaced it after this reader read the record."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DerivedState:
    """The components of one index directory, kept at the store's last commit.

    Args:
        folder: The index directory.
        store: Its store.
        read_only: A reader never writes files or records.
    """

    def __init__(self, folder: Path, store: Store, read_only: bool) -> None:
        self.folder = folder
        self.store = store
        self.read_only = read_only
        self._held: dict[str, _Held] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._held

    def get(self, name: str) -> Any:
        """The component ``name`` (attached before)."""
        return self._held[name].component

    def recorded(self) -> list[str]:
        """The components that have a published file recorded in the store."""
        return sorted((self.store.get_meta("derived") or {}).keys())

    def _state(self) -> tuple[int, int]:
        return int(self.store.get_meta("generation", 0)), int(self.store.get_meta("next_id", 0))

    def attach(self, component: Component) -> Any:
        """Start keeping ``component`` in step: load its published file (verified) or rebuild it, then catch up to
        the last commit. Returns the component."""
        for attempt in range(3):
            with self.store.snapshot() as store:
                generation, watermark = self._state()
                try:
                    held = self._load(component, store, last_try=attempt == 2)
                except _Missing:
                    continue
                if held is None:
                    logger.info("building %s of %s from the store", component.name, self.folder)
                    component.rebuild(store)
                    held = _Held(component, generation, watermark, dirty=component.persisted)
                else:
                    self._catch_up(held, store, generation, watermark)
                    if not np.array_equal(np.sort(component.ids()), np.sort(store.all_chunk_ids())):
                        # a sound file caught up holds exactly the stored chunks: the store lost or moved rows
                        logger.warning("%s of %s does not hold the chunks of its store; rebuilding it from the store",
                                       component.name, self.folder)
                        component.rebuild(store)
                        held = _Held(component, generation, watermark, dirty=component.persisted)
            self._held[component.name] = held
            break
        return component

    def _load(self, component: Component, store: Store, last_try: bool) -> _Held | None:
        record = (store.get_meta("derived") or {}).get(component.name)
        if not record:
            return None
        path = self.folder / str(record.get("file", ""))
        problem = None
        try:
            data = path.read_bytes()
            if len(data) != record.get("size") or _digest(data) != record.get("sha256"):
                problem = "its size or checksum differs from the one recorded"
            else:
                component.load(data, store)
        except FileNotFoundError:
            if self.read_only and not last_try:
                raise _Missing() from None
            problem = "it is missing"
        except IndexDamagedError:  # the store itself: rebuilding from it cannot help
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            problem = f"it cannot be read ({exc})"
        if problem is not None:
            logger.warning("%s is not used: %s; rebuilding %s from the store", path, problem, component.name)
            return None
        return _Held(component, int(record["generation"]), int(record["watermark"]), dirty=False)

    def _catch_up(self, held: _Held, store: Store, generation: int, watermark: int) -> None:
        if held.generation == generation and held.watermark == watermark:
            return
        if held.generation < int(store.get_meta("removals_from", 0)):  # the log no longer reaches back
            held.component.rebuild(store)
        else:
            held.component.apply(store, store.removed_since(held.generation), held.watermark)
        held.generation, held.watermark = generation, watermark

    def follow(self) -> bool:
        """Bring every component to the store's last commit (a reader before a search, a writer after a
        commit); True when anything moved."""
        if not self._held:
            return False
        with self.store.snapshot() as store:
            generation, watermark = self._state()
            stale = [h for h in self._held.values() if (h.generation, h.watermark) != (generation, watermark)]
            for held in stale:
                self._catch_up(held, store, generation, watermark)
        return bool(stale)

    def rebuild(self, name: str) -> None:
        """Rebuild one component from the store now (it is published again at the next publish)."""
        held = self._held[name]
        with self.store.snapshot() as store:
            held.component.rebuild(store)
            held.generation, held.watermark = self._state()
        held.dirty = held.component.persisted

    def publish(self) -> None:
        """Write the file of every component whose published file is behind it, and record it; a failure (a full
        disk) removes the files written and leaves the records as they were."""
        if self.read_only:
            return
        self.follow()
        generation, watermark = self._state()
        before = dict(self.store.get_meta("derived") or {})
        records = dict(before)
        written: list[tuple[_Held, Path]] = []
        try:
            for name, held in self._held.items():
                if not held.component.persisted:
                    records.pop(name, None)
                elif held.dirty or records.get(name, {}).get("generation") != generation:
                    data = held.component.dump()
                    assert data is not None
                    path = self.folder / f"{name}.{generation}.{held.component.suffix}"
                    atomic_write(path, data)
                    written.append((held, path))
                    records[name] = {"file": path.name, "generation": generation, "watermark": watermark,
                                     "size": len(data), "sha256": _digest(data)}
            if records != before:
                self.store.begin()
                self.store.set_meta("derived", records)
                self.store.prune_removals(REMOVALS_KEPT)
                self.store.commit()
        except BaseException:
            self.store.rollback()
            recorded = {r.get("file") for r in before.values()}
            for _, path in written:
                if path.name not in recorded:
                    path.unlink(missing_ok=True)
            raise
        for held, _ in written:
            held.dirty = False
        self._remove_unrecorded(records)

    def _remove_unrecorded(self, records: dict[str, Any]) -> None:
        """Delete the older files of the components (a reader that was about to read one retries)."""
        keep = {r["file"] for r in records.values()}
        patterns = [re.compile(rf"{re.escape(name)}\.\d+\.{re.escape(held.component.suffix)}")
                    for name, held in self._held.items()]
        for path in self.folder.iterdir():
            if path.name not in keep and any(p.fullmatch(path.name) for p in patterns):
                path.unlink(missing_ok=True)
