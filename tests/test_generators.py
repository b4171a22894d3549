"""Generators: the protocol, model and callable generators, and the OpenAI-compatible endpoint client."""

from __future__ import annotations

import doctest
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import LocalEndpoint

import refiner_trl.generators as generators_module
from refiner_trl.generators import (
    CallableGenerator,
    Generator,
    GeneratorError,
    ModelGenerator,
    OpenAIChatGenerator,
    as_generator,
    checked_generate,
)
from refiner_trl.modeling import build_tiny_model, inference_device, train_tokenizer

SECRET = "sk-test-do-not-leak-1234"


@pytest.fixture(scope="module")
def tiny_causal():
    tokenizer = train_tokenizer(["x + y = z", "Tom has 3 apples. Feedback: wrong operator."] * 20, vocab_size=300)
    return build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1), tokenizer


# --- protocol, wrappers -------------------------------------------------------------------------------------------


def test_callable_generator_and_checked_generate():
    generator = CallableGenerator(lambda prompts: [p[::-1] for p in prompts])
    assert isinstance(generator, Generator)
    assert checked_generate(generator, ["ab", "cd"]) == ["ba", "dc"]
    with pytest.raises(GeneratorError, match=r"expected 2, got 1 \(turn 3\)"):
        checked_generate(CallableGenerator(lambda prompts: ["one"]), ["a", "b"], " (turn 3)")
    with pytest.raises(GeneratorError, match="int at index 1"):
        checked_generate(CallableGenerator(lambda prompts: ["a", 2]), ["a", "b"])
    with pytest.raises(GeneratorError, match="ZeroDivisionError"):
        checked_generate(CallableGenerator(lambda prompts: [1 / 0]), ["a"])


def test_as_generator(tiny_causal):
    model, tokenizer = tiny_causal
    generator = CallableGenerator(lambda prompts: prompts)
    assert as_generator(generator) is generator
    assert isinstance(as_generator(lambda prompts: prompts), CallableGenerator)
    wrapped = as_generator((model, tokenizer))
    assert isinstance(wrapped, ModelGenerator) and wrapped.model is model and not wrapped.do_sample
    with pytest.raises(TypeError, match=r"pass \(model, tokenizer\)"):
        as_generator(model)  # a model has a `generate` method, but not a Generator's
    with pytest.raises(TypeError, match="Cannot use int"):
        as_generator(3)
    with pytest.raises(TypeError, match="tuple of 3"):
        as_generator((model, tokenizer, None))


def test_model_generator_chunks_by_batch_size(tiny_causal, monkeypatch):
    model, tokenizer = tiny_causal
    generator = ModelGenerator(model, tokenizer, max_new_tokens=3, batch_size=2, max_prompt_length=4)
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw))
    prompts = [f"Tom has {i} apples." for i in range(5)]
    texts = generator.generate(prompts)
    assert calls == [2, 2, 1]
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)
    assert generator.num_truncated_prompts == 5  # every prompt is longer than 4 tokens
    with pytest.raises(ValueError, match="tokenizer"):
        ModelGenerator(model)


def test_inference_device_prefers_a_gpu_and_names_a_bad_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device() == torch.device("cuda")
    assert inference_device("cpu") == torch.device("cpu")
    assert inference_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device: 'gpu0' is not a torch device"):
        inference_device("gpu0")


def test_docstring_examples():
    results = doctest.testmod(generators_module)
    assert results.attempted > 0 and results.failed == 0, results  # no example found is a failure too


# --- OpenAI-compatible endpoint -----------------------------------------------------------------------------------


class FakeServer(LocalEndpoint):
    """A local OpenAI-compatible server; `faults[n]` ("slow", "500", "429", "400" or "ok") shapes the n-th request."""

    def __init__(self, faults=()):
        self.faults = list(faults)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    number = len(server.requests)
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                fault = server.faults[number] if number < len(server.faults) else "ok"
                if fault == "slow":
                    server.release.wait(2.0)
                if fault in ("500", "429", "400"):
                    # The error echoes the key, as a careless server might: the client must redact it.
                    status, echo = int(fault), f"injected fault; auth={self.headers.get('Authorization')}"
                    payload = json.dumps({"error": {"message": echo}}).encode()
                else:
                    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                    choice = {
                        "message": {"role": "assistant", "content": f" echo {prompt} "},
                        "text": f" text {prompt}",
                    }
                    status, payload = 200, json.dumps({"choices": [choice]}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up on a slow answer
                    pass

        super().__init__(Handler)


@pytest.fixture
def make_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def make(faults=()):
        servers.append(FakeServer(faults))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def client(server, **kwargs):
    options = {"base_url": server.base_url, "timeout": 0.5, "max_retries": 3, "backoff": 0.01}
    return OpenAIChatGenerator("tiny-gpt", **{**options, **kwargs})


def test_endpoint_survives_a_slow_answer_and_a_500(make_server):
    server = make_server(["slow", "500"])
    prompts = ["2 + 2 =", "3 * 4 =", "7 - 1 ="]
    texts = client(server, max_workers=2).generate(prompts)
    assert texts == [f"echo {p}" for p in prompts]  # stripped, in the prompts' order
    assert len(server.requests) == len(prompts) + 2  # each fault cost exactly one retry
    assert {r["messages"][-1]["content"] for r in server.requests} == set(prompts)


def test_endpoint_one_prompt_retries_in_order(make_server):
    server = make_server(["slow", "500", "429"])
    assert client(server).generate(["x"]) == ["echo x"]
    assert len(server.requests) == 4


def test_endpoint_request_body_and_key(make_server):
    server = make_server()
    generator = client(server, system_prompt="Be terse.", temperature=0.7, max_tokens=9, extra_body={"stop": ["\n"]})
    assert generator.generate(["hi"]) == ["echo hi"]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {SECRET}"
    assert request["model"] == "tiny-gpt" and request["temperature"] == 0.7 and request["max_tokens"] == 9
    assert request["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert request["stop"] == ["\n"]
    assert SECRET not in repr(vars(generator))
    assert client(server).generate([]) == [] and len(server.requests) == 1


def test_completions_endpoint_and_base_url_from_env(make_server, monkeypatch):
    server = make_server()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.delenv("OPENAI_API_KEY")
    generator = OpenAIChatGenerator("tiny-gpt", endpoint="completions", timeout=1.0)
    assert generator.generate(["1 + 1 ="]) == ["text 1 + 1 ="]
    (request,) = server.requests
    assert request["path"] == "/v1/completions" and request["prompt"] == "1 + 1 =" and request["auth"] is None


def test_endpoint_gives_up_with_a_clear_error_that_hides_the_key(make_server):
    server = make_server(["ok", "500", "500", "500"])
    with pytest.raises(GeneratorError) as caught:
        client(server, max_retries=2, max_workers=1).generate(["fine", "doomed"])
    message = str(caught.value)
    assert "prompt 1 failed after 3 attempt(s)" in message and "HTTP 500" in message
    assert SECRET not in message and "auth=Bearer ***" in message
    assert len(server.requests) == 4


def test_endpoint_does_not_retry_client_errors(make_server):
    server = make_server(["400"])
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 1 attempt\(s\).*HTTP 400"):
        client(server).generate(["x"])
    assert len(server.requests) == 1


def test_endpoint_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generator = OpenAIChatGenerator("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 2 attempt\(s\).*Connection"):
        generator.generate(["x"])


def test_endpoint_rejects_bad_options():
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIChatGenerator("m", base_url="http://127.0.0.1:1", endpoint="embeddings")
    with pytest.raises(ValueError, match="system_prompt"):
        OpenAIChatGenerator("m", base_url="http://127.0.0.1:1", endpoint="completions", system_prompt="s")
