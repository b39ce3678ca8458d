"""Stable JSON: sorted keys, two-space indent, no wall-clock stamps."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if obj != obj else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is None or obj != obj:  # pd.NA / NaN
        return None
    return str(obj)


def dumps(data: Any) -> str:
    """Deterministic JSON text of ``data`` (numpy/pandas scalars converted)."""
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(data, default=_default, option=opts).decode() + "\n"


def render(data: dict[str, Any]) -> str:
    return dumps(data)
