"""Generation: `generate_texts`, the one path by which the trainer explores and `refine` generates.

Every row goes through one `generate` loop with these parts:
- **shared prompts**: a prompt sampled k times is encoded once: a causal model prefills its key-value cache once for
  its k rows ([`prefill_shared_prompts`]), an encoder-decoder runs its encoder once and repeats the encoder's outputs;
- **one sampler**: nucleus sampling goes through [`NucleusSampler`] with greedy decoding. `generate(do_sample=True,
  top_p=p)` sorts all of a row's logits at every new token (transformers' `TopPLogitsWarper`); on SmolLM2 (49,152
  tokens) that sort was 20% of a REFINER step's CPU time (docs/benchmarks.md, section 3). The sampler finds the
  nucleus among a row's few hundred most likely tokens (`torch.topk`), then among 16 times as many, falls back to the
  full sort for a row whose nucleus is wider still, and draws the token itself: transformers' distribution;
- **early exit**: rows that have ended (EOS) leave the batch and the cache ([`RegroupWhenFinished`]), so that they
  stop costing compute while the longest row goes on; greedy outputs are those of one `generate` call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TopPLogitsWarper,
)
from transformers.modeling_outputs import BaseModelOutput

from .data import encode_prompts
from .modeling import forward_parameters, is_encoder_decoder, unwrapped_model

REGROUP_SHARE = 0.25
"""The share of a batch's open rows that must have ended before they leave it (each regrouping copies the cache)."""


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_prompt_length: int | None = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    num_return_sequences: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    add_special_tokens: bool = True,
    share_prompt_cache: bool = True,
    drop_finished: bool = True,
) -> tuple[list[str], int]:
    """Generate for all prompts in one batch; the `num_return_sequences` texts of a prompt are adjacent.

    Each prompt is repeated for its `num_return_sequences` rows after it is encoded: a causal model prefills each
    distinct prompt once and repeats its key-value cache (see [`prefill_shared_prompts`]), an encoder-decoder runs
    its encoder once per prompt and repeats its outputs. The distribution is that of `generate(...,
    num_return_sequences=k)`, and nucleus sampling goes through [`NucleusSampler`] on every path.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A seq2seq or causal LM (possibly a PEFT model).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer, with a pad token.
        prompts (`Sequence[str]`):
            The prompts.
        max_prompt_length (`int`, *optional*):
            Prompts longer than this keep their last tokens.
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Most new tokens per text.
        do_sample (`bool`, *optional*, defaults to `False`):
            Sample (with `temperature`, `top_p`, `top_k`) instead of greedy decoding.
        num_return_sequences (`int`, *optional*, defaults to `1`):
            Texts per prompt.
        add_special_tokens (`bool`, *optional*, defaults to `True`):
            `False` for conversations rendered to text first ([`~refiner_trl.chat.render_generation_prompts`]): the
            chat template wrote their special tokens already.
        share_prompt_cache (`bool`, *optional*, defaults to `True`):
            Encode each distinct prompt once. `False` repeats every prompt before it is encoded; causal models whose
            cache cannot be shared fall back to that by themselves, with one warning.
        drop_finished (`bool`, *optional*, defaults to `True`):
            Let rows that ended leave the batch and the cache (see [`RegroupWhenFinished`]); `False` computes every
            row until the longest one ends, as one `generate` call does.

    Returns:
        `(texts, n_truncated)`: the decoded, stripped new text, and how many prompts were cut to `max_prompt_length`.
    """
    encoder_decoder = is_encoder_decoder(model)
    inputs, n_truncated = encode_prompts(tokenizer, prompts, max_prompt_length, encoder_decoder, add_special_tokens)
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    rows = [i for i in range(len(prompts)) for _ in range(num_return_sequences)]
    shared = share_prompt_cache and len(set(prompts)) < len(rows)
    if encoder_decoder:
        row_inputs = encode_rows(model, inputs, rows) if shared else encode_rows(model, _select(inputs, rows))
    else:
        prefilled = prefill_shared_prompts(model, inputs, prompts, rows) if shared else None
        row_inputs = _select(inputs, rows) if prefilled is None else {**prefilled[1], "cache": prefilled[0]}
    options = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    options.update(sampling_options(do_sample, temperature, top_p, top_k))
    early_exit = drop_finished and _unshareable_cache_reason(model) is None
    new_tokens = generate_rows(model, row_inputs, max_new_tokens, options, early_exit)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [text.strip() for text in texts], n_truncated


def generate_rows(
    model: PreTrainedModel,
    inputs: dict[str, Any],
    max_new_tokens: int,
    options: dict[str, Any],
    drop_finished: bool = True,
) -> list[list[int]]:
    """Run `generate` over the rows of `inputs` and return each row's new tokens (for an encoder-decoder, after the
    decoder start token), in row order.

    With `drop_finished`, `generate` stops once [`REGROUP_SHARE`] of the rows have ended; the ended rows leave, the
    cache keeps the open rows only ([`~transformers.Cache.batch_select_indices`]) and `generate` goes on from it. The
    open rows' tokens are those of one uninterrupted call: greedy decoding gives the same texts.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The model.
        inputs (`dict[str, Any]`):
            One row per output: `input_ids` and `attention_mask`, a causal model's prefilled `cache`, an
            encoder-decoder's `encoder_outputs`.
        max_new_tokens (`int`):
            Most new tokens per row.
        options (`dict[str, Any]`):
            The other `generate` options, `eos_token_id` among them.
        drop_finished (`bool`, *optional*, defaults to `True`):
            Let ended rows leave the batch.
    """
    encoder_decoder = is_encoder_decoder(model)
    start = 1 if encoder_decoder else inputs["input_ids"].shape[1]  # where the new tokens begin (after the start)
    key = "decoder_input_ids" if encoder_decoder else "input_ids"
    open_rows = list(range(inputs["input_ids"].shape[0]))
    done: dict[int, list[int]] = {}
    stop = RegroupWhenFinished(options["eos_token_id"]) if drop_finished else None
    while True:
        width = inputs[key].shape[1] if key in inputs else start  # the tokens before this call's new ones
        if stop is not None:
            stop.begin(width, len(open_rows))
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens - (width - start),
            return_dict_in_generate=True,
            stopping_criteria=StoppingCriteriaList([stop] if stop is not None else []),
            **options,
        )
        sequences = output.sequences
        ended = (sequences[:, width:] == options["eos_token_id"]).any(dim=1)
        if sequences.shape[1] - start >= max_new_tokens or bool(ended.all()) or stop is None:
            ended[:] = True
        for position, row in enumerate(open_rows):
            if ended[position]:
                done[row] = sequences[position, start:].tolist()
        if bool(ended.all()):
            return [done[row] for row in range(len(done))]
        keep = (~ended).nonzero().squeeze(1)
        open_rows = [open_rows[i] for i in keep.tolist()]
        inputs = _continue_rows(inputs, sequences, output.cache, keep, encoder_decoder)


class RegroupWhenFinished(StoppingCriteria):
    """Stops `generate` for all rows once [`REGROUP_SHARE`] of them have ended (emitted EOS), so that
    [`generate_rows`] goes on with the open rows only.

    Args:
        eos_token_id (`int`):
            The token that ends a row.
    """

    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id
        self.width = 0
        self.needed = 1

    def begin(self, width: int, num_rows: int) -> None:
        """Start a `generate` call of `num_rows` rows whose new tokens come after their first `width` tokens."""
        self.width = width
        self.needed = max(1, math.ceil(REGROUP_SHARE * num_rows))

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        ended = int((input_ids[:, self.width :] == self.eos_token_id).any(dim=1).sum())
        return torch.full((input_ids.shape[0],), ended >= self.needed, dtype=torch.bool, device=input_ids.device)


def _continue_rows(
    inputs: dict[str, Any], sequences: torch.Tensor, cache: Any, keep: torch.Tensor, encoder_decoder: bool
) -> dict[str, Any]:
    """The `generate` inputs that continue the rows `keep` of `sequences` from their `cache`.

    The (decoder's) attention mask covers every token so far, so that `generate` runs only the one the cache lacks."""
    cache.batch_select_indices(keep)
    sequences = sequences[keep]
    if not encoder_decoder:
        mask = inputs["attention_mask"][keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], sequences.shape[1] - mask.shape[1])], dim=1)
        return {"input_ids": sequences, "attention_mask": mask, "cache": cache}
    encoder = BaseModelOutput(last_hidden_state=inputs["encoder_outputs"].last_hidden_state[keep])
    rows = {key: inputs[key][keep] for key in ("input_ids", "attention_mask")}
    decoder = {"decoder_input_ids": sequences, "decoder_attention_mask": torch.ones_like(sequences)}
    return {**rows, "encoder_outputs": encoder, **decoder, "cache": cache}


def _select(inputs: dict[str, torch.Tensor], rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """The rows `rows` (prompt indices, repeats allowed) of every tensor of `inputs`."""
    index = torch.tensor(list(rows), device=inputs["input_ids"].device)
    return {key: value[index] for key, value in inputs.items()}


def encode_rows(
    model: PreTrainedModel, inputs: dict[str, torch.Tensor], rows: Sequence[int] | None = None
) -> dict[str, Any]:
    """Run an encoder-decoder's encoder once over `inputs` and give each output row its prompt's encoder outputs.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            An encoder-decoder (possibly a PEFT or DeepSpeed-wrapped one).
        inputs (`dict[str, torch.Tensor]`):
            `input_ids` and `attention_mask`, one row per prompt.
        rows (`Sequence[int]`, *optional*):
            For each output row, the index of its prompt; by default the rows of `inputs`.

    Returns:
        `input_ids`, `attention_mask` and `encoder_outputs`, one row per output row, for `generate`.
    """
    encoder = unwrapped_model(model).get_encoder()
    hidden = encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    rows = range(inputs["input_ids"].shape[0]) if rows is None else rows
    index = torch.tensor(list(rows), device=hidden.device)
    return {**_select(inputs, rows), "encoder_outputs": BaseModelOutput(last_hidden_state=hidden[index])}


def sampling_options(do_sample: bool, temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    """The `generate` options of greedy decoding or of sampling with `temperature`, `top_p` and `top_k`.

    Nucleus sampling (`top_p` < 1) goes through a [`NucleusSampler`] with greedy decoding: the same distribution as
    `do_sample=True`, without sorting the whole vocabulary at every token; sampling without a nucleus (`top_p` = 1)
    is given to `generate` as it is (its warpers sort nothing then).

    Args:
        do_sample (`bool`):
            Sample instead of greedy decoding.
        temperature (`float`):
            Sampling temperature.
        top_p (`float`):
            Nucleus mass.
        top_k (`int`):
            Top-k filtering; `0` turns it off.
    """
    if not do_sample:
        return {"do_sample": False}
    if top_p >= 1.0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    # The model's own sampling defaults must not apply: the sampler does it all, with the settings given here.
    neutral = GenerationConfig()
    return {
        "do_sample": False,
        "temperature": neutral.temperature,
        "top_p": neutral.top_p,
        "top_k": neutral.top_k,
        "logits_processor": LogitsProcessorList([NucleusSampler(temperature, top_k, top_p)]),
    }


def prefill_shared_prompts(
    model: PreTrainedModel, inputs: dict[str, torch.Tensor], prompts: Sequence[str], rows: Sequence[int]
) -> tuple[Any, dict[str, torch.Tensor]] | None:
    """Prefill each distinct left-padded prompt of a causal model once, and give each output row its prompt's cache.

    The cache holds all prompt tokens but the last: `generate`, given the cache and the rows' full inputs, runs only
    that last token, whose logits draw the first new token, so decoding proceeds exactly as from a full prefill.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            A causal LM (possibly a PEFT or DeepSpeed-wrapped model).
        inputs (`dict[str, torch.Tensor]`):
            `input_ids` and `attention_mask` of the prompts, left-padded, one row per prompt.
        prompts (`Sequence[str]`):
            The prompt texts (equal texts share one prefill).
        rows (`Sequence[int]`):
            For each output row, the index of its prompt.

    Returns:
        `(cache, row_inputs)`, `row_inputs` being `input_ids` and `attention_mask` with one row per output row; or
        `None` when this model's cache cannot be shared (warned once per reason), so the caller generates as usual.
    """
    if inputs["input_ids"].shape[1] < 2:
        return None  # nothing to prefill before the last token
    reason = _unshareable_cache_reason(model)
    if reason is not None:
        if reason not in _WARNED_UNSHARED:
            _WARNED_UNSHARED.add(reason)
            warnings.warn(
                f"Each prompt is prefilled once per sample: {reason}. This warning is shown once.", stacklevel=3
            )
        return None
    firsts: dict[str, int] = {}
    for index, prompt in enumerate(prompts):
        firsts.setdefault(prompt, index)
    distinct = torch.tensor(sorted(set(firsts.values())), device=inputs["input_ids"].device)
    slot = {index: position for position, index in enumerate(distinct.tolist())}
    input_ids, attention_mask = inputs["input_ids"][distinct, :-1], inputs["attention_mask"][distinct]
    # The positions `generate` derives from the attention mask, so the cached tokens sit where it expects them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, :-1]
    config = unwrapped_model(model).config
    cache = DynamicCache(config=config)
    forward_kwargs: dict[str, Any] = {"attention_mask": attention_mask[:, :-1], "cache": cache, "use_cache": True}
    parameters = forward_parameters(model)
    if "position_ids" in parameters:
        forward_kwargs["position_ids"] = position_ids
    if "logits_to_keep" in parameters:
        forward_kwargs["logits_to_keep"] = 1
    model(input_ids=input_ids, **forward_kwargs)
    cache.batch_select_indices(torch.tensor([slot[firsts[prompts[i]]] for i in rows], device=input_ids.device))
    index = torch.tensor(list(rows), device=input_ids.device)
    return cache, {"input_ids": inputs["input_ids"][index], "attention_mask": inputs["attention_mask"][index]}


_WARNED_UNSHARED: set[str] = set()


def _unshareable_cache_reason(model: Any) -> str | None:
    """Why a prompt's key-value cache cannot be prefilled once and shared for this model, or `None` when it can."""
    peft_config = getattr(getattr(model, "module", model), "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning PEFT adapter puts its virtual tokens in the cache"
    inner = unwrapped_model(model)
    supports = getattr(inner, "_supports_default_dynamic_cache", None)
    if not callable(supports) or not supports():
        return f"{type(inner).__name__} does not use transformers' DynamicCache"
    if "cache" not in forward_parameters(inner):
        return f"{type(inner).__name__}.forward takes no `cache` argument"
    text_config = inner.config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None) or ()
    if any(kind not in ("full_attention", "sliding_attention") for kind in layer_types):
        return f"{type(inner).__name__} has layers ({sorted(set(layer_types))}) whose cache is not per-token"
    return None


CANDIDATES = 256
"""The most likely tokens among which [`NucleusSampler`] looks for a row's nucleus before it sorts the whole row."""


class NucleusSampler(LogitsProcessor):
    """
    Draws each row's next token with temperature, top-k and top-p (nucleus) sampling, and returns scores that are 0 at
    that token and `-inf` elsewhere, so that a greedy `generate` takes it.

    The distribution is the one of `generate(do_sample=True, temperature=..., top_k=..., top_p=...)`: the logits are
    divided by `temperature`, cut to the `top_k` most likely tokens, then to the smallest set of most likely tokens
    whose probability reaches `top_p` (a token is kept when the mass of the tokens above it is below `top_p`, as in
    `TopPLogitsWarper`), and renormalized. Only the draws differ from transformers' for the same seed (another random
    call), and a token tied with the nucleus's last one may be kept in its place.

    Args:
        temperature (`float`, *optional*, defaults to `1.0`):
            The logits are divided by it.
        top_k (`int`, *optional*, defaults to `0`):
            Keep the `top_k` most likely tokens; `0` keeps all.
        top_p (`float`, *optional*, defaults to `1.0`):
            The nucleus's probability mass; `1.0` keeps all (of the `top_k`).
        candidates (`int`, *optional*, defaults to [`CANDIDATES`]):
            How many of a row's most likely tokens are searched for its nucleus before the row is sorted whole.

    Example:

    ```python
    >>> import torch
    >>> sampler = NucleusSampler(top_p=0.5, candidates=2)
    >>> scores = sampler(None, torch.tensor([[4.0, 0.0, 0.0, 0.0]]))  # the nucleus is token 0 alone
    >>> scores.argmax(-1).tolist(), torch.isinf(scores).sum().item()
    ([0], 3)

    ```
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, candidates: int = CANDIDATES):
        if temperature <= 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        if top_k < 0 or not 0 < top_p <= 1:
            raise ValueError(f"top_k must be at least 0 and top_p in (0, 1], got top_k={top_k}, top_p={top_p}")
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.candidates = candidates
        self.rows = 0
        self.sorted_rows = 0

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        indices, weights, wide = self.nucleus(scores)
        tokens = indices.gather(-1, torch.multinomial(weights, 1))
        if wide.any():  # once more among 16 times the candidates, then the whole sorted row
            rows = wide.nonzero().squeeze(-1)
            indices, weights, wider = self.nucleus(scores[rows], width=16 * self.candidates)
            tokens[rows] = indices.gather(-1, torch.multinomial(weights, 1))
            if wider.any():
                tokens[rows[wider]] = self._draw_sorted(scores[rows[wider]])
            self.sorted_rows += int(wider.sum())
        self.rows += scores.shape[0]
        return torch.full_like(scores, float("-inf")).scatter_(-1, tokens, 0.0)

    def nucleus(
        self, scores: torch.Tensor, width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's nucleus among its most likely tokens.

        Args:
            scores (`torch.Tensor`):
                Logits already divided by the temperature, `(rows, vocabulary)`.
            width (`int`, *optional*):
                How many candidates to search; defaults to `candidates`.

        Returns:
            `(indices, weights, wide)`: the candidate tokens of each row (most likely first), their probabilities
            within the nucleus (0 outside it; not renormalized), and which rows have a nucleus wider than their
            candidates (those rows are drawn from the whole sorted row instead).
        """
        vocab = scores.shape[-1]
        support = min(self.top_k, vocab) if self.top_k else vocab
        width = support if self.top_k else min(width or self.candidates, vocab)
        values, indices = scores.topk(width, dim=-1)
        log_total = values.logsumexp(-1, keepdim=True) if width == support else scores.logsumexp(-1, keepdim=True)
        probs = (values - log_total).exp()
        keep = (probs.cumsum(-1) - probs) < self.top_p  # the mass above a token is below top_p
        keep[:, 0] = True
        wide = (probs.sum(-1) < self.top_p) & (width < support)
        return indices, probs.masked_fill(~keep, 0.0), wide

    def _draw_sorted(self, scores: torch.Tensor) -> torch.Tensor:
        """The draw of transformers' own warper (the whole rows sorted), for rows whose nucleus is wider."""
        if self.top_k:
            scores = scores.masked_fill(scores < scores.topk(self.top_k, dim=-1).values[..., -1:], float("-inf"))
        return torch.multinomial(TopPLogitsWarper(self.top_p)(None, scores).softmax(-1), 1)
