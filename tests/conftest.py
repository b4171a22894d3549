"""Shared test helpers: tiny models built from a config and tokenizers trained on the spot (nothing downloaded)."""

from __future__ import annotations

import os
import random
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from refiner_trl import RefinerConfig, RefinerTrainer  # noqa: E402
from refiner_trl.modeling import build_tiny_model, train_tokenizer  # noqa: E402

# Tiny models gain nothing from a second thread, and threads that wait on each other are slow on a shared CPU.
torch.set_num_threads(1)
from refiner_trl.templates import REFINE_TEMPLATE  # noqa: E402

ARCHITECTURES = ("seq2seq", "causal")
CODE_WORDS = list(string.ascii_lowercase[:20])


def quiet_refiner_config(output_dir: str | Path, **values) -> RefinerConfig:
    """A CPU `RefinerConfig` that logs every step to the log history only and saves nothing, with `values` on top."""
    defaults = {
        "output_dir": str(output_dir),
        "logging_steps": 1,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    return RefinerConfig(**{**defaults, **values})


class SpyTrainer(RefinerTrainer):
    """Records what each explored turn sampled and picked, and every pick generator's position and seed.

    Each override calls the trainer's own method and returns its result unchanged.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples: list[tuple[list[str], list[str]]] = []  # (prompts, samples) of each `_sample` call
        self.picks: list[list[int]] = []
        self.turn_prompts: list[list[list[str]]] = []  # what each `_explore` returned
        self.seeds: list[tuple[str, tuple[int, int], int]] = []  # (mode, (step, micro-batch), seed)

    def _sample(self, generator, prompts):
        samples = super()._sample(generator, prompts)
        self.samples.append((list(prompts), samples))
        return samples

    def _pick(self, num_examples, rng):
        picks = super()._pick(num_examples, rng)
        self.picks.append(picks)
        return picks

    def _explore(self, model, prompts, references, mode):
        turn_prompts = super()._explore(model, prompts, references, mode)
        self.turn_prompts.append(turn_prompts)
        return turn_prompts

    def _pick_generator(self, mode):
        rng = super()._pick_generator(mode)
        self.seeds.append((mode, self._pick_position[mode], rng.initial_seed()))
        return rng


class GenerateSpy:
    """Wraps a model's `generate`: records each call's keyword arguments and output shape, and returns its output."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self.original = model.generate
        model.generate = self

    def __call__(self, **kwargs):
        output = self.original(**kwargs)
        self.calls.append({**kwargs, "output_shape": tuple(output.shape)})
        return output


class LocalEndpoint:
    """An HTTP server on a free local port serving `handler` from a background thread.

    `release` is set when the server closes, so a handler that waits on it never outlives the test.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


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
