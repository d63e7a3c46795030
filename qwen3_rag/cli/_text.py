"""Text from documents and file names, made safe to print on a terminal.

A document or a file name can hold control characters that a terminal acts on: ESC sequences that set the window
title, clear the screen or move the cursor, a bell, C1 controls (``\\x9b`` is CSI on some terminals), and Unicode
bidi overrides that make text display in another order than it reads ("Trojan source"). Human-readable output
shows each of them as a visible escape (``\\x1b``, ``\\u202e``) instead; lone surrogates (bytes of a file name that
were not UTF-8) are shown the same way rather than failing the print. JSON output is never escaped this way: its
own encoding is exact.
"""

from __future__ import annotations

import re

#: C0 controls but tab and newline, DEL, C1 controls, bidi embeddings / overrides / isolates, lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``, ``\\u202e``).

    Args:
        text: Any text (a passage, a path, an error reason).
        multiline: Keep tabs and newlines as they are (else they are escaped too, so that one value stays on one
            line).

    Example:
        >>> printable("title\\x1b]0;pwned\\x07 and\\nmore")
        'title\\\\x1b]0;pwned\\\\x07 and\\\\nmore'
    """
    out = _UNSAFE.sub(_escape, text)
    return out if multiline else _LINE_BREAKS.sub(_escape, out)
