"""One place that imports optional dependencies (saying which extra installs them) and lazily imported names."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any


def is_available(module: str) -> bool:
    """True when ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import an optional dependency or raise an ImportError that names the extra to install.

    Args:
        module: The import name, e.g. ``"langchain_core"``.
        extra: The qwen3-rag extra that provides it, e.g. ``"langchain"``.
        feature: What needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = feature or module
        raise ImportError(
            f"{what} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'qwen3-rag[{extra}]'"
        ) from exc


def lazy_attributes(
    module: str, lazy: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` that import ``lazy``'s names (name -> module) on first access.

    Use as ``__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())``.
    """

    def __getattr__(name: str) -> Any:
        source = lazy.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(lazy))

    return __getattr__, __dir__
