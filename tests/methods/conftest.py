"""Fixtures shared by the CC-Tuning test modules."""

from __future__ import annotations

import pytest

from tests.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()
