"""Shared test helpers: tiny models built from a config and tokenizers trained on the spot (nothing downloaded)."""

from __future__ import annotations

import os
import random
import string

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from refiner_trl.modeling import build_tiny_model, train_tokenizer  # noqa: E402

# Tiny models gain nothing from a second thread, and threads that wait on each other are slow on a shared CPU.
torch.set_num_threads(1)
from refiner_trl.templates import REFINE_TEMPLATE  # noqa: E402

ARCHITECTURES = ("seq2seq", "causal")
CODE_WORDS = list(string.ascii_lowercase[:20])


def code_rows(n: int, seed: int, length: int = 3) -> list[dict[str, str]]:
    """Rows whose completion is a random code that cannot be guessed from the prompt."""
    rng = random.Random(seed)
    return [
        {
            "prompt": f"Item {rng.randrange(10**6)}: what is its code?",
            "completion": " ".join(rng.choices(CODE_WORDS, k=length)),
        }
        for _ in range(n)
    ]


def reveal_feedback(hypothesis: str, reference: str) -> str:
    """An oracle whose feedback reveals the gold completion."""
    from refiner_trl.critics import NO_ERROR

    return NO_ERROR if hypothesis == reference else f"The code is {reference}"


def tokenizer_for(rows: list[dict[str, str]]):
    """A byte-level BPE tokenizer trained on the rows and the refine template's words."""
    texts = [r["prompt"] + " " + r["completion"] for r in rows]
    texts += [REFINE_TEMPLATE + " The code is No error."] * 20
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(params=ARCHITECTURES)
def architecture(request) -> str:
    return request.param


@pytest.fixture
def tiny(architecture):
    """`(model, tokenizer, rows)` for a tiny model of the parametrised architecture."""
    rows = code_rows(32, seed=0)
    tokenizer = tokenizer_for(rows)
    return build_tiny_model(architecture, tokenizer, seed=0), tokenizer, rows
