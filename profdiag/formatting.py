"""Number and name formatting shared by every output (text, Markdown, HTML, gate, compare)
and by library sentences (attribution, gate summaries): one wording of each number.

Pure functions of their arguments; nothing here imports a renderer, so the gate and the
library can use them without depending on the presentation layer.
"""

from __future__ import annotations

import re
from typing import Any


def fmt_ns(ns: Any, micro: str = "us") -> str:
    """A duration in the unit that suits it: '812 ns', '3.47 us', '14.547 ms', '1.20 s'."""
    if ns is None or ns != ns:
        return "-"
    v = float(ns)
    if abs(v) < 1e3:
        return f"{v:.0f} ns"
    if abs(v) < 1e6:
        return f"{v / 1e3:.2f} {micro}"
    if abs(v) < 1e9:
        return f"{v / 1e6:.3f} ms"
    return f"{v / 1e9:.2f} s"


def fmt_ms(ns: Any) -> str:
    return "-" if ns is None or ns != ns else f"{float(ns) / 1e6:.3f}"


def fmt_us(ns: Any) -> str:
    return "-" if ns is None or ns != ns else f"{float(ns) / 1e3:.2f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{float(x) * 100:.{digits}f}%"


def fmt_si(x: Any, unit: str = "", digits: int = 3) -> str:
    """A number with an SI prefix: 1.62e11, 'FLOP/s' -> '162 GFLOP/s'."""
    if x is None or x != x:
        return "-"
    v = float(x)
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.{digits}g} {prefix}{unit}".rstrip()
    return f"{v:.{digits}g} {unit}".rstrip()


def fmt_num(x: Any) -> str:
    """Integers as integers, other numbers with 4 significant digits."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "-"
        if abs(x) >= 1e4:
            return f"{x:,.0f}"
        return str(int(x)) if x.is_integer() else f"{x:.4g}"
    return str(x)


_NAMESPACES = re.compile(r"\b(?:at::native::|at::cuda::|at::|c10::|cutlass::|std::)|"
                         r"\(anonymous namespace\)::")


def short_kernel_name(name: Any) -> str:
    """A kernel name without 'void ' and the common C++ namespaces, for narrow columns
    (the distinguishing functor of 'at::native::elementwise_kernel<...>' then shows)."""
    s = str(name)
    if s.startswith("void "):
        s = s[5:]
    return re.sub(r"\s+", " ", _NAMESPACES.sub("", s)).strip() or str(name)


def truncate(text: Any, width: int) -> str:
    s = str(text)
    return s if len(s) <= width else s[: max(width - 1, 1)] + "…"
