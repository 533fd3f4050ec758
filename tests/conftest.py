"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight for the cores with other jobs).
    End-to-end tests on the default model run in subprocesses with torch's own default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
