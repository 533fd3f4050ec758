"""Shared test settings and fixtures: a tiny random checkpoint and a small training file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight for the cores with other jobs).
    End-to-end tests on the default model run in subprocesses with torch's own default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {"lang": lang, "instruction": f"What is the topic? {i} {lang}", "output": "sports",
         "instruction_en": f"What is the topic? {i}"}
        for i in range(6) for lang in ("sw", "en")
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
