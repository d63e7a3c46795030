"""One place that imports optional dependencies and says which extra installs them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


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
