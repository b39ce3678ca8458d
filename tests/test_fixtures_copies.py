"""The fixtures tests use in place of ../shared files are byte-identical copies of them."""

from __future__ import annotations

import hashlib

import pytest

from helpers import FIXTURE_COPIES, SHARED


@pytest.mark.parametrize("rel", sorted(FIXTURE_COPIES))
def test_fixture_is_a_copy_of_the_shared_file(rel):
    fixture = FIXTURE_COPIES[rel]
    assert fixture.is_file(), fixture
    original = SHARED / rel
    if not original.exists():
        pytest.skip(f"needs ../shared/{rel} to compare the fixture with")
    assert hashlib.sha256(fixture.read_bytes()).digest() == \
        hashlib.sha256(original.read_bytes()).digest()
