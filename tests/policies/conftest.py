"""Fixtures for the policy tests (helpers live in policy_support.py, which pickles by name)."""

from __future__ import annotations

import pytest
from policy_support import MemoryStore


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()
