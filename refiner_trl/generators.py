"""Generators: anything that writes one text per prompt (a trained model, a function, or an LLM behind an API)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import openai
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class GeneratorError(RuntimeError):
    """Raised when a generator fails or answers with something other than one text per prompt."""


@runtime_checkable
class Generator(Protocol):
    """What [`refine`] needs of a generator: batched generation, one text per prompt, in the prompts' order.

    A prompt is a string or a conversation (a list of `{"role", "content"}` messages ending with the user's, TRL's
    conversational format); the prompts of one call are all of one kind. Chat generators take conversations as
    they are ([`ModelGenerator`] renders them with the tokenizer's chat template).
    """

    def generate(self, prompts: Sequence[str] | Sequence[list[dict[str, str]]]) -> list[str]: ...


def checked_texts(
    call: Callable[[], Any],
    expected: int,
    error_type: type[Exception],
    label: str,
    wording: tuple[str, str],
    where: str = "",
) -> list[str]:
    """Run `call` and check that it returned `expected` strings, else raise `error_type` naming `label` and `where`.

    The one check behind [`~refiner_trl.critics.checked_critique`] and [`checked_generate`]: exceptions other
    than `error_type` are wrapped, a wrong count or a non-text item is named. `wording` is `(what one item per input
    is called, what a non-text item is told)`.
    """
    unit, not_text = wording
    try:
        texts = call()
    except error_type:
        raise
    except Exception as error:
        raise error_type(f"{label} raised {error!r}{where}") from error
    if not isinstance(texts, (list, tuple)) or len(texts) != expected:
        got = len(texts) if isinstance(texts, (list, tuple)) else type(texts).__name__
        raise error_type(f"{label} must return one {unit}: expected {expected}, got {got}{where}")
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise error_type(f"{label} returned {type(item).__name__} at index {index}, {not_text}{where}")
    return list(texts)


def checked_generate(generator: Generator, prompts: Sequence[str], where: str = "") -> list[str]:
    """Call `generator.generate` and check its answer: one `str` per prompt, else [`GeneratorError`] naming `where`.

    Args:
        generator ([`Generator`]):
            The generator to call once with all `prompts`.
        prompts (`Sequence[str]` or `Sequence[list[dict]]`):
            The prompts: strings or conversations.
        where (`str`, *optional*, defaults to `""`):
            Appended to error messages, e.g. `" (turn 2)"`.
    """
    return checked_texts(
        lambda: generator.generate(list(prompts)),
        len(prompts),
        GeneratorError,
        f"{type(generator).__name__}.generate",
        ("text per prompt", "not text"),
        where,
    )


class CallableGenerator:
    """A generator made from a function `fn(prompts) -> list[str]`.

    Args:
        fn (`Callable[[list[str]], list[str]]`):
            Called once per batch with the list of prompts; returns one text per prompt.

    Example:

    ```python
    >>> from refiner_trl.generators import CallableGenerator
    >>> CallableGenerator(lambda prompts: [p.upper() for p in prompts]).generate(["a", "b"])
    ['A', 'B']

    ```
    """

    def __init__(self, fn: Callable[[list[str]], list[str]]):
        self.fn = fn

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return list(self.fn(list(prompts)))


class ModelGenerator:
    """A seq2seq or causal language model, greedy or sampled, through [`generate_texts`] (one call per chunk).

    Conversational prompts are rendered with the tokenizer's chat template and its generation prompt
    ([`~refiner_trl.chat.render_generation_prompts`], `chat_template_kwargs`) and tokenized without adding special
    tokens, which the template wrote; string prompts are tokenized as they are.

    Args:
        model (`PreTrainedModel` or `str`):
            The generator model, or a name or path to load it from (its tokenizer comes from the same place).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Required when `model` is a model object.
        max_prompt_length (`int`, *optional*, defaults to `512`):
            Longest prompt in tokens; longer prompts keep their end (in a refine prompt, the feedback).
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest generated text in tokens.
        do_sample (`bool`, *optional*, defaults to `False`):
            Sample instead of greedy decoding (seed with `transformers.set_seed` for reproducible samples).
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature (used only when `do_sample=True`).
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling mass (used only when `do_sample=True`).
        batch_size (`int`, *optional*, defaults to `64`):
            How many prompts go into one `generate` call.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Passed to `from_pretrained` when `model` is a name or path.
        chat_template_kwargs (`dict`, *optional*):
            More keyword arguments for the chat template of conversational prompts, e.g. `{"enable_thinking": False}`.

    Attributes:
        num_truncated_prompts (`int`):
            How many prompts were cut to `max_prompt_length` so far.
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_prompt_length: int = 512,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 64,
        trust_remote_code: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        if isinstance(model, str):
            from .modeling import load_model_and_tokenizer

            model, loaded_tokenizer = load_model_and_tokenizer(model, trust_remote_code=trust_remote_code)
            tokenizer = tokenizer or loaded_tokenizer
        if tokenizer is None:
            raise ValueError("ModelGenerator needs `tokenizer` when `model` is a model object.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.num_truncated_prompts = 0
        # Rows that end leave the batch ([`generate_texts`]' `drop_finished`); a caller that sets generation-config
        # state tied to the first new token (`ModelCritic`'s barred "No error.") turns it off for one call.
        self.drop_finished = True

    @classmethod
    def from_trainer(
        cls,
        trainer: Any,
        max_prompt_length: int,
        max_new_tokens: int,
        trust_remote_code: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> ModelGenerator:
        """A greedy generator over the model a trainer trained and saved, for the evaluation after training.

        A single process's model is used as it is; a model that DeepSpeed shards or that several processes hold is
        read back from `trainer.args.output_dir` onto the process's device (call it on the main process only).
        Prompts go through `generate` in batches of `trainer.args.per_device_eval_batch_size`.

        Args:
            trainer (`transformers.Trainer`):
                The trainer, after `save_model(trainer.args.output_dir)`.
            max_prompt_length (`int`):
                Longest prompt in tokens.
            max_new_tokens (`int`):
                Longest hypothesis in tokens.
            trust_remote_code (`bool`, *optional*, defaults to `False`):
                Run the model repository's code when reading it back.
            chat_template_kwargs (`dict`, *optional*):
                Extra arguments of the chat template, for conversational prompts.
        """
        from .modeling import load_model_and_tokenizer

        if trainer.is_deepspeed_enabled or trainer.accelerator.num_processes > 1:
            model, tokenizer = load_model_and_tokenizer(trainer.args.output_dir, trust_remote_code=trust_remote_code)
            model.to(trainer.accelerator.device)
        else:
            model, tokenizer = trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class
        return cls(
            model,
            tokenizer,
            max_prompt_length=max_prompt_length,
            max_new_tokens=max_new_tokens,
            batch_size=trainer.args.per_device_eval_batch_size,
            chat_template_kwargs=chat_template_kwargs,
        )

    def generate(self, prompts: Sequence[str] | Sequence[list[dict[str, str]]]) -> list[str]:
        from .chat import check_prompts, render_generation_prompts, require_chat_template
        from .generation import generate_texts

        prompts = list(prompts)
        chat = check_prompts(prompts, f"{type(self).__name__}.generate: prompts")
        if chat:
            require_chat_template(self.tokenizer, f"{type(self).__name__}.generate: prompts[0]")
            prompts = render_generation_prompts(self.tokenizer, prompts, self.chat_template_kwargs)
        texts: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk, n_truncated = generate_texts(
                self.model,
                self.tokenizer,
                prompts[start : start + self.batch_size],
                max_prompt_length=self.max_prompt_length,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.do_sample,
                temperature=self.temperature,
                top_p=self.top_p,
                add_special_tokens=not chat,
                drop_finished=self.drop_finished,
            )
            texts.extend(chunk)
            self.num_truncated_prompts += n_truncated
        return texts


def _is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # an object cannot be a torch module unless torch is already imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def as_generator(obj: Generator | Callable[[list[str]], list[str]] | tuple[Any, Any]) -> Generator:
    """Turn a `(model, tokenizer)` pair, a function from prompts to texts, or a [`Generator`] into a [`Generator`].

    A bare model is refused: it has a `generate` method, but not the one a [`Generator`] has.

    Args:
        obj (`Generator`, `Callable` or `tuple`):
            A [`Generator`] (returned as is), a `(model, tokenizer)` pair (wrapped in [`ModelGenerator`] with its
            defaults: greedy decoding), or a callable `fn(prompts) -> list[str]` (wrapped in [`CallableGenerator`]).
    """
    if isinstance(obj, tuple):
        if len(obj) != 2:
            raise TypeError(f"A generator given as a tuple must be (model, tokenizer), got a tuple of {len(obj)}")
        return ModelGenerator(*obj)
    if _is_torch_module(obj):
        raise TypeError(
            f"Got a bare {type(obj).__name__}: pass (model, tokenizer) or ModelGenerator(model, tokenizer, ...)."
        )
    if isinstance(obj, Generator):
        return obj
    if callable(obj):
        return CallableGenerator(obj)
    raise TypeError(
        f"Cannot use {type(obj).__name__} as a generator: pass a Generator, a (model, tokenizer) pair, "
        "or a function from a list of prompts to a list of texts."
    )


class OpenAIChatGenerator:
    """Any LLM behind an OpenAI-compatible `chat/completions` or `completions` endpoint, through the official `openai`
    client (`pip install "refiner-trl[openai]"`), one request per prompt.

    Requests for different prompts run concurrently, on one client whose connections they share. The client retries
    a timeout, a dropped or refused connection, HTTP 408, 409, 429 and 5xx, with exponential back-off from 0.5 s (or
    the server's `retry-after` delay); other HTTP errors (400, 401, 404, ...) and an answer that is not JSON fail at
    once. When a prompt's retries are spent, [`GeneratorError`] names the prompt's index, the attempts, the URL and
    the HTTP status. The API key is read from the environment at each `generate` call; it is never stored on the
    object, logged, or put in an error message (also when the server echoes it).

    Args:
        model (`str`):
            The model name the endpoint expects, e.g. `"gpt-4o-mini"`.
        base_url (`str`, *optional*):
            The API root, e.g. `"http://127.0.0.1:8000/v1"`. Defaults to the environment variable named by
            `base_url_env`, else `"https://api.openai.com/v1"`.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            The environment variable holding the key, sent as `Authorization: Bearer ...`. When it is unset, no
            `Authorization` header is sent (local servers such as vLLM or `transformers serve` need none).
        base_url_env (`str`, *optional*, defaults to `"OPENAI_BASE_URL"`):
            The environment variable read when `base_url` is not given.
        timeout (`float`, *optional*, defaults to `30.0`):
            Seconds to wait for the connection and for each read of the answer, per attempt.
        max_retries (`int`, *optional*, defaults to `3`):
            Retries after the first attempt, so at most `max_retries + 1` requests per prompt.
        system_prompt (`str`, *optional*):
            A system message put before each prompt (`endpoint="chat"` only).
        temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature sent with each request.
        max_tokens (`int`, *optional*, defaults to `256`):
            Longest answer in tokens.
        max_workers (`int`, *optional*, defaults to `8`):
            How many requests run at the same time.
        endpoint (`str`, *optional*, defaults to `"chat"`):
            `"chat"` posts `{"messages": [...]}` to `/chat/completions`: a prompt given as text becomes one user
            message, a prompt given as a conversation (a list of `{"role": ..., "content": ...}` dicts) is sent as
            it is. `"completions"` posts `{"prompt": ...}` to `/completions` and takes text prompts only.
        extra_body (`dict`, *optional*):
            More fields for each request body, e.g. `{"stop": ["\\n"]}`.

    Example:

    ```python
    >>> # In the shell, not in code: export OPENAI_API_KEY=...
    >>> generator = OpenAIChatGenerator("gpt-4o-mini", system_prompt="Write the equation only.")  # doctest: +SKIP
    >>> generator.generate(["Tom has 3 apples and buys 2 more. How many apples does he have?"])  # doctest: +SKIP
    ['3 + 2']

    ```
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        base_url_env: str = "OPENAI_BASE_URL",
        timeout: float = 30.0,
        max_retries: int = 3,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        max_workers: int = 8,
        endpoint: Literal["chat", "completions"] = "chat",
        extra_body: dict[str, Any] | None = None,
    ):
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if max_retries < 0 or max_workers < 1 or timeout <= 0:
            raise ValueError("need max_retries >= 0, max_workers >= 1 and timeout > 0")
        if system_prompt is not None and endpoint != "chat":
            raise ValueError("system_prompt needs endpoint='chat'")
        _import_openai()
        self.model = model
        self.base_url = (base_url or os.environ.get(base_url_env) or "https://api.openai.com/v1").rstrip("/")
        self.url = self.base_url + ("/chat/completions" if endpoint == "chat" else "/completions")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_workers = max_workers
        self.endpoint = endpoint
        self.extra_body = dict(extra_body or {})

    def generate(self, prompts: Sequence[str | list[dict[str, Any]]]) -> list[str]:
        prompts = list(prompts)
        conversations = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
        if conversations and self.endpoint == "completions":
            raise ValueError(
                f"{type(self).__name__}: prompt {conversations[0]} is a conversation; the 'completions' endpoint "
                "takes text prompts only (use endpoint='chat')"
            )
        if not prompts:
            return []
        openai = _import_openai()
        api_key = os.environ.get(self.api_key_env)
        # Without a key the client still wants one; the placeholder is never sent, the header being omitted.
        client = openai.OpenAI(
            api_key=api_key or "unused", base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
        )
        headers = {} if api_key else {"Authorization": openai.Omit()}
        with (
            _LOG_REDACTION.hiding(api_key),
            client,
            ThreadPoolExecutor(max_workers=min(self.max_workers, len(prompts))) as pool,
        ):
            futures = [
                pool.submit(self._generate_one, client, headers, api_key, index, prompt)
                for index, prompt in enumerate(prompts)
            ]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _generate_one(
        self, client: openai.OpenAI, headers: dict[str, Any], api_key: str | None, index: int, prompt: Any
    ) -> str:
        openai = _import_openai()
        if self.endpoint == "chat":
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            create, body = client.chat.completions.with_raw_response.create, {"messages": [*system, *messages]}
        else:
            create, body = client.completions.with_raw_response.create, {"prompt": prompt}
        options = {"temperature": self.temperature, "max_tokens": self.max_tokens, "extra_body": self.extra_body}
        try:
            raw = create(model=self.model, extra_headers=headers, **options, **body)
        except openai.APIError as error:  # an HTTP status, a timeout or a connection error, once retries are spent
            status = getattr(error, "status_code", None)
            reason = f"HTTP {status}: {error.message}" if status else f"{type(error).__name__}: {error.message}"
            raise GeneratorError(self._failure(index, _attempts(error.request), reason, api_key)) from None
        try:
            choice = raw.parse().choices[0]
            text = choice.message.content if self.endpoint == "chat" else choice.text
        except (ValueError, AttributeError, IndexError, TypeError) as error:  # not JSON, or no choice in it
            body = redact(raw.http_response.text, api_key)  # before the cut: a cut key would no longer match
            reason = f"unexpected answer ({type(error).__name__}): {body[:200]!r}"
            raise GeneratorError(self._failure(index, raw.retries_taken + 1, reason, api_key)) from None
        if not isinstance(text, str):  # null content (a refusal, a tool call), or a number from a careless server
            field = "message.content" if self.endpoint == "chat" else "text"
            reason = (
                f"the answer's {field} is {type(text).__name__ if text is not None else 'null'}, not text "
                f"(finish_reason {getattr(choice, 'finish_reason', None)!r}); check the model and max_tokens"
            )
            raise GeneratorError(self._failure(index, raw.retries_taken + 1, reason, api_key))
        return text.strip()

    def _failure(self, index: int, attempts: int, reason: str, api_key: str | None) -> str:
        """The error message, with the key redacted before it is cut (a cut could keep part of the key)."""
        reason = " ".join(redact(reason, api_key).split())
        return (
            f"{type(self).__name__}: prompt {index} failed after {attempts} attempt(s) to {self.url}: {reason[:300]}"
        )


REDACTED = "***"
_SECRET_PIECE = 8


def redact(text: str, secret: str | None) -> str:
    """`text` with the secret, and every piece of it of 8 or more characters, replaced by `***`.

    Pieces count too, so that a server that echoes part of a key (or a body cut elsewhere) shows none of it. Redact
    before cutting a text: a cut can split the key so that the whole key no longer matches.

    Args:
        text (`str`):
            An error message, a server's answer, a log line.
        secret (`str`, *optional*):
            The key; `None` or empty returns `text` as it is.

    Example:

    ```python
    >>> redact("auth=Bearer sk-abcdefgh123; echo sk-abcdefg", "sk-abcdefgh123")
    'auth=Bearer ***; echo ***'

    ```
    """
    if not secret or not text:
        return text
    text = text.replace(secret, REDACTED)
    size = min(_SECRET_PIECE, len(secret))
    pieces = {secret[i : i + size] for i in range(len(secret) - size + 1)}
    hidden = [False] * len(text)
    for start in range(len(text) - size + 1):
        if text[start : start + size] in pieces:
            hidden[start : start + size] = [True] * size
    if not any(hidden):
        return text
    out, start = [], 0
    while start < len(text):
        end = start
        while end < len(text) and hidden[end] == hidden[start]:
            end += 1
        out.append(REDACTED if hidden[start] else text[start:end])
        start = end
    return "".join(out)


class _LogRedaction(logging.Filter):
    """Redacts the keys of the running `generate` calls from the records of the HTTP client's loggers: the `openai`
    client logs the `x-request-id` response header, and httpcore the response headers, at DEBUG, which a careless
    server may fill with the key. A logger's filter sees only its own records, so each logger gets it."""

    PREFIXES = ("openai", "httpx", "httpcore")

    def loggers(self) -> list[logging.Logger]:
        names = [name for name in logging.root.manager.loggerDict if name.split(".")[0].startswith(self.PREFIXES)]
        return [logging.getLogger(name) for name in sorted({*names, *self.PREFIXES})]

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.secrets: dict[str, int] = {}
        self.installed: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        with self.lock:
            secrets = list(self.secrets)
        if secrets:
            message = record.getMessage()
            for secret in secrets:
                message = redact(message, secret)
            record.msg, record.args = message, None
        return True

    def hiding(self, secret: str | None) -> _Hiding:
        return _Hiding(self, secret)


class _Hiding:
    """While open, `secret` is redacted from the HTTP client's logs."""

    def __init__(self, redaction: _LogRedaction, secret: str | None):
        self.redaction, self.secret = redaction, secret

    def __enter__(self) -> None:
        if not self.secret:
            return
        with self.redaction.lock:
            if not self.redaction.secrets:
                self.redaction.installed = self.redaction.loggers()
                for logger in self.redaction.installed:
                    logger.addFilter(self.redaction)
            self.redaction.secrets[self.secret] = self.redaction.secrets.get(self.secret, 0) + 1

    def __exit__(self, *exc: Any) -> None:
        if not self.secret:
            return
        with self.redaction.lock:
            count = self.redaction.secrets.pop(self.secret) - 1
            if count:
                self.redaction.secrets[self.secret] = count
            elif not self.redaction.secrets:
                for logger in self.redaction.installed:
                    logger.removeFilter(self.redaction)


_LOG_REDACTION = _LogRedaction()


def _attempts(request: Any) -> int:
    """How many requests the client made: the last one carries the retries it took in `x-stainless-retry-count`."""
    return int(request.headers.get("x-stainless-retry-count", 0)) + 1


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as error:
        raise ImportError(
            'OpenAIChatGenerator needs the `openai` package: pip install "refiner-trl[openai]"'
        ) from error
    return openai
