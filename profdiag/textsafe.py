"""Terminal-safe text: kernel names, labels and paths come from untrusted files, so control
characters (ANSI CSI/OSC escapes, carriage returns, backspaces, bidi overrides) are shown
as visible escapes (``\\x1b``) in text, Markdown and terminal output instead of being
interpreted by the terminal. HTML escapes its own text; JSON keeps the exact string.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls, and the bidi embedding/override/isolate
# characters that can make a terminal (or a Markdown viewer) show text in another order.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def has_control(text: str) -> bool:
    return bool(_CONTROL.search(text))


def clean(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    if not isinstance(text, str) or not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escape, text)


def clean_obj(obj: Any) -> Any:
    """A copy of a JSON-like structure with every string (and key) cleaned."""
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {clean(k) if isinstance(k, str) else k: clean_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clean_obj(v) for v in obj)
    return obj
