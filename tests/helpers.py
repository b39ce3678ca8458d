"""Test helpers: paths to bundled fixtures and ../shared (skipped when absent), cached diagnoses."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
SHARED = REPO.parent / "shared"
SHARED_TORCH = SHARED / "traces" / "torch"


def shared_or_skip(*parts: str) -> Path:
    """Path under ../shared, skipping the test when the checkout has no shared/ beside it."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def shared_manifest() -> list[dict]:
    path = SHARED_TORCH / "manifest.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["captures"]


@lru_cache(maxsize=32)
def diagnosed(path: str, **kw: object):
    """Diagnose a trace once per test session (diagnosis objects are treated read-only)."""
    import profdiag

    return profdiag.diagnose(profdiag.load(path), **kw)
