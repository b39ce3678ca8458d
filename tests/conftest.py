"""Session fixtures: the bundled tiny traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FIXTURES


@pytest.fixture(scope="session")
def tiny_decode() -> Path:
    return FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"


@pytest.fixture(scope="session")
def tiny_graph() -> Path:
    return FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"


@pytest.fixture(scope="session")
def tiny_prefill() -> Path:
    return FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz"


@pytest.fixture(scope="session", autouse=True)
def _reports_validate_against_the_schema():
    """Every report a test produces validates against `profdiag schema` (schema_guard.py)."""
    from schema_guard import install

    with install():
        yield
