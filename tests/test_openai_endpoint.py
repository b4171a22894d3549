"""`OpenAIChatGenerator` on the official `openai` client: against a real `transformers serve`, and against a local
fault server for the faults a real server will not make on demand (each retried as documented, then one error)."""

from __future__ import annotations

import json
import logging
import random
import socket
import string
import sys
import threading
import traceback
import warnings
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import LocalEndpoint

from refiner_trl.generators import GeneratorError, OpenAIChatGenerator, redact

SECRET = "sk-test-do-not-leak-1234"
SERVED_MAX_TOKENS = 6


# --- the real server ------------------------------------------------------------------------------------------------


def served_generator(server, **kwargs) -> OpenAIChatGenerator:
    """A client of the served model; `max_retries=0`, so one request per prompt."""
    options = {"max_tokens": SERVED_MAX_TOKENS, "max_retries": 0, "timeout": 60.0, "max_workers": 4}
    return OpenAIChatGenerator(server.model, base_url=server.base_url, **{**options, **kwargs})


def test_chat_generation_against_transformers_serve(transformers_server, served_answer, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conversation = [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "a 0 is"},
    ]
    prompts = ["a 0 is", "b 1 is", "c 2 is", conversation, "d 3 is"]
    texts = served_generator(transformers_server).generate(prompts)  # four requests at a time
    assert texts == [served_answer(p, SERVED_MAX_TOKENS) for p in prompts]  # one text per prompt, in order
    assert all(isinstance(t, str) and t for t in texts)
    assert len(set(texts)) >= 3  # the answers differ, so the order is really checked
    assert texts[3] != texts[0]  # the conversation was sent as its messages, not as one user message


def test_completions_generation_against_transformers_serve(transformers_server, served_answer):
    prompts = ["a 0 is", "wrong 7 is", "e 4 is correct"]
    texts = served_generator(transformers_server, endpoint="completions").generate(prompts)
    assert texts == [served_answer(p, SERVED_MAX_TOKENS, chat=False) for p in prompts]


def test_a_model_the_server_does_not_serve_is_a_clear_error(transformers_server):
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 1 attempt\(s\) to .*/chat/completions: HTTP 400"):
        OpenAIChatGenerator("not-served", base_url=transformers_server.base_url, max_retries=2).generate(["x"])


# --- the fault server -----------------------------------------------------------------------------------------------

ANSWER_FAULTS = ("500", "429", "400")


class FaultServer(LocalEndpoint):
    """A mock OpenAI-compatible server; `faults[n]` shapes the n-th request.

    `"500"`, `"429"`, `"400"`: that HTTP error, whose message echoes the `Authorization` header (as a careless server
    might); the retryable ones ask for a 1 ms retry delay (`retry-after-ms`), which the client honours. `"slow"`: an
    answer that never comes (the handler waits on `release`, set only at teardown). `"drop"`: the connection is closed
    without an answer. `"badjson"`: HTTP 200 with a body that is not JSON. Anything else: an answer echoing the prompt.
    """

    def __init__(self, faults=(), last=None):
        self.faults = list(faults)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        # `last=(prompt, n)`: the request for `prompt` is answered only after `n` others were, whatever the timing.
        self.last = last
        self.answered = threading.Semaphore(0)
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
                    server.release.wait()
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                headers = {"Content-Type": "application/json"}
                if fault in ANSWER_FAULTS:
                    status, echo = int(fault), f"injected fault; auth={self.headers.get('Authorization')}"
                    payload = json.dumps({"error": {"message": echo}}).encode()
                    headers["retry-after-ms"] = "1"
                elif fault == "badjson":
                    status, payload = 200, b'{"choices": [{"message": '
                else:
                    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                    if server.last is not None and prompt == server.last[0]:
                        for _ in range(server.last[1]):
                            server.answered.acquire()
                    choice = {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f" echo {prompt} "},
                        "text": f" text {prompt}",
                    }
                    status, payload = 200, json.dumps({"choices": [choice]}).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                server.answered.release()

        super().__init__(Handler)


@pytest.fixture
def make_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers = []

    def make(faults=(), **kwargs):
        servers.append(FaultServer(faults, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def client(server, **kwargs) -> OpenAIChatGenerator:
    options = {"base_url": server.base_url, "timeout": 5.0, "max_retries": 3}
    return OpenAIChatGenerator("tiny-gpt", **{**options, **kwargs})


def test_a_500_and_a_429_are_retried_and_answers_keep_the_prompts_order(make_server):
    server = make_server(["500", "429"])
    prompts = ["2 + 2 =", "3 * 4 =", "7 - 1 =", "9 / 3 ="]
    texts = client(server, max_workers=2).generate(prompts)
    assert texts == [f"echo {p}" for p in prompts]  # stripped, in the prompts' order
    assert len(server.requests) == len(prompts) + 2  # each fault cost exactly one retry
    assert {r["messages"][-1]["content"] for r in server.requests} == set(prompts)


def test_answers_keep_the_prompts_order_when_the_first_prompt_is_answered_last(make_server):
    # No timing luck: the server holds the first prompt's request until it has answered all the others.
    prompts = ["2 + 2 =", "3 * 4 =", "7 - 1 =", "9 / 3 ="]
    server = make_server(last=(prompts[0], len(prompts) - 1))
    texts = client(server, max_workers=len(prompts)).generate(prompts)
    assert texts == [f"echo {p}" for p in prompts]
    assert len(server.requests) == len(prompts)


def test_a_dropped_connection_is_retried(make_server):
    server = make_server(["drop"])
    assert client(server).generate(["x"]) == ["echo x"]
    assert len(server.requests) == 2


def test_an_answer_that_never_comes_times_out_and_is_retried(make_server):
    # The first request waits until teardown, so it always times out; the others are answered at once.
    server = make_server(["slow"])
    assert client(server, timeout=2.0, max_workers=1).generate(["x", "y"]) == ["echo x", "echo y"]
    assert [r["messages"][-1]["content"] for r in server.requests] == ["x", "x", "y"]


def test_answers_that_never_come_give_one_timeout_error(make_server):
    server = make_server(["slow", "slow"])
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 2 attempt\(s\) to .*APITimeoutError.*timed out"):
        client(server, timeout=0.3, max_retries=1).generate(["x"])
    assert len(server.requests) == 2


def test_malformed_json_fails_at_once_naming_the_prompt(make_server):
    server = make_server(["ok", "badjson"])
    with pytest.raises(GeneratorError) as caught:
        client(server, max_workers=1).generate(["fine", "broken"])
    message = str(caught.value)
    assert "prompt 1 failed after 1 attempt(s)" in message and "unexpected answer" in message
    assert '\'{"choices": [{"message": \'' in message  # the start of what came back
    assert len(server.requests) == 2  # a 200 is not retried, whatever its body


def test_spent_retries_give_one_clear_error_that_hides_the_key(make_server, caplog, capsys):
    server = make_server(["ok", "500", "500", "500"])
    with caplog.at_level(logging.DEBUG), pytest.raises(GeneratorError) as caught:
        client(server, max_retries=2, max_workers=1).generate(["fine", "doomed"])
    message = str(caught.value)
    assert message.startswith("OpenAIChatGenerator: prompt 1 failed after 3 attempt(s) to http://127.0.0.1:")
    assert "HTTP 500" in message and "auth=Bearer ***" in message  # the echoed key is redacted
    assert len(server.requests) == 4
    assert server.requests[1]["auth"] == f"Bearer {SECRET}"  # the key was sent...
    captured = capsys.readouterr()
    shown = [message, "".join(traceback.format_exception(caught.value)), caplog.text, captured.out, captured.err]
    assert "Retrying request" in caplog.text  # the client's own log was captured
    assert not any(SECRET in text for text in shown)  # ...and appears in no error, traceback or log


def test_client_errors_are_not_retried(make_server):
    server = make_server(["400"])
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 1 attempt\(s\).*HTTP 400"):
        client(server).generate(["x"])
    assert len(server.requests) == 1


def test_a_refused_connection_is_retried_then_named():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generator = OpenAIChatGenerator("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(GeneratorError, match=r"prompt 0 failed after 2 attempt\(s\).*APIConnectionError"):
        generator.generate(["x"])


def test_request_body_key_and_conversations(make_server):
    server = make_server()
    generator = client(server, system_prompt="Be terse.", temperature=0.7, max_tokens=9, extra_body={"stop": ["\n"]})
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    assert generator.generate(["hi", conversation]) == ["echo hi", "echo bye"]
    first, second = sorted(server.requests, key=lambda r: len(r["messages"]))
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == f"Bearer {SECRET}"
    assert first["model"] == "tiny-gpt" and first["temperature"] == 0.7 and first["max_tokens"] == 9
    assert first["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert second["messages"] == [{"role": "system", "content": "Be terse."}, *conversation]  # sent as it is
    assert first["stop"] == ["\n"]
    assert SECRET not in repr(vars(generator))
    assert client(server).generate([]) == [] and len(server.requests) == 2


def test_completions_endpoint_base_url_from_env_and_no_key(make_server, monkeypatch):
    server = make_server()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.delenv("OPENAI_API_KEY")
    generator = OpenAIChatGenerator("tiny-gpt", endpoint="completions", timeout=5.0)
    assert generator.generate(["1 + 1 ="]) == ["text 1 + 1 ="]
    (request,) = server.requests
    assert request["path"] == "/v1/completions" and request["prompt"] == "1 + 1 =" and request["auth"] is None
    with pytest.raises(ValueError, match="prompt 1 is a conversation; the 'completions' endpoint"):
        generator.generate(["fine", [{"role": "user", "content": "hi"}]])
    assert len(server.requests) == 1  # refused before any request


def test_bad_options_and_a_missing_client(monkeypatch):
    with pytest.raises(ValueError, match="endpoint"):
        OpenAIChatGenerator("m", base_url="http://127.0.0.1:1", endpoint="embeddings")
    with pytest.raises(ValueError, match="system_prompt"):
        OpenAIChatGenerator("m", base_url="http://127.0.0.1:1", endpoint="completions", system_prompt="s")
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match=r"refiner-trl\[openai\]"):
        OpenAIChatGenerator("m", base_url="http://127.0.0.1:1")


# --- the key, wherever a server puts it ------------------------------------------------------------------------------

LONG_KEY = "sk-" + "".join(random.Random(26).choices(string.ascii_letters + string.digits, k=31))
FILLER = "".join(random.Random(0).choices(string.ascii_lowercase + " <>/=", k=320))


class KeyEchoServer(LocalEndpoint):
    """Puts the key the client sent where the prompt `"<kind> <offset>"` says: `text200` / `text500`, into a non-JSON
    body at that offset; `json400`, into the fields of a JSON error; `header`, into the answer's headers."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kind, offset = body["messages"][-1]["content"].split()
                key = self.headers["Authorization"].removeprefix("Bearer ")
                planted = FILLER[: int(offset)] + key + FILLER[int(offset) :]
                headers = {"Content-Type": "text/plain", "x-request-id": key, "x-echo": f"Bearer {key}"}
                if kind in ("text200", "text500"):
                    status, payload = int(kind[-3:]), planted.encode()
                elif kind == "json400":
                    error = {"message": planted, "type": key, "param": {"auth": key}, "code": key}
                    status, payload = 400, json.dumps({"error": error, "key": key}).encode()
                    headers["Content-Type"] = "application/json"
                else:
                    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
                    status, payload = 200, json.dumps({"choices": [choice]}).encode()
                    headers["Content-Type"] = "application/json"
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload)), "retry-after-ms": "1"}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)


def key_pieces(key: str, size: int = 8) -> set[str]:
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def test_no_piece_of_the_key_shows_wherever_the_server_puts_it(monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", LONG_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = KeyEchoServer()
    try:
        generator = OpenAIChatGenerator("m", base_url=server.base_url, timeout=5.0, max_retries=1)
        shown, offsets = [], range(len(FILLER) + 1)
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught_warnings:
            warnings.simplefilter("always")
            prompts = [f"text200 {n}" for n in offsets] + [f"text500 {n}" for n in offsets[::7]]
            prompts += [f"json400 {n}" for n in offsets[::7]] + ["header 0"]
            for prompt in prompts:
                try:
                    assert generator.generate([prompt]) == ["ok"]
                except GeneratorError as error:
                    shown += [str(error), "".join(traceback.format_exception(error))]
        captured = capsys.readouterr()
        shown += [caplog.text, captured.out, captured.err, *(str(w.message) for w in caught_warnings)]
    finally:
        server.close()
    assert len(shown) > 2 * len(offsets)  # every planted body gave an error
    assert "request_id" in caplog.text and "***" in caplog.text  # the client logged the header, redacted
    leaks = [(piece, text[:80]) for text in shown for piece in key_pieces(LONG_KEY) if piece in text]
    assert leaks == []


def test_redact_hides_the_key_and_its_pieces():
    key = "sk-abcdefghijklmnop"
    assert redact(f"a {key} b", key) == "a *** b"
    assert redact(f"cut: {key[:10]}", key) == "cut: ***"  # a piece of 8 or more characters
    assert redact(f"tail {key[-9:]}!", key) == "tail ***!"
    assert redact("sk-abcd is short", key) == "sk-abcd is short"  # under 8 characters: not a piece
    assert redact("anything", None) == "anything" and redact("", key) == ""
