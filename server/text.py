"""Text from callers and servers, made safe to print on one line of a terminal or a dialog.

Imports nothing of taskorch's: the command line's read commands use it too.
"""

from __future__ import annotations

import unicodedata

__all__ = ["one_line"]

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    """`char`, or an escape for it when it could break, hide or reorder a line."""
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    category = unicodedata.category(char)
    # Controls, format characters (bidi overrides, zero-width), surrogates, private
    # use and unassigned code points, and every separator but the plain space.
    if category[0] == "C" or (category[0] == "Z" and char != " "):
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def one_line(text: str) -> str:
    """`text` with everything that could break, hide or reorder the line escaped."""
    out = "".join(_escaped(c) for c in text)
    # A combining mark at the end would draw over whatever follows the text.
    if out and unicodedata.category(out[-1])[0] == "M":
        out = out[:-1] + f"\\u{ord(out[-1]):04x}"
    return out
