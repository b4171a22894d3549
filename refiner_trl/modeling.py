"""Loading and building models and tokenizers (seq2seq and causal alike), and batched text generation."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
)

from .data import encode_prompts

Architecture = Literal["seq2seq", "causal"]
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


def is_encoder_decoder(model: PreTrainedModel) -> bool:
    """Whether `model` (possibly wrapped by PEFT) is an encoder-decoder."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def inference_device(device: str | None = None) -> torch.device:
    """The device to run inference on: `device` when given (e.g. `"cuda:1"`), else the first CUDA GPU when there is
    one, else the CPU. Raises `ValueError` naming `device` when torch does not know it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device: {device!r} is not a torch device ({error})") from error


def split_gguf_path(path: str | os.PathLike) -> tuple[str, str]:
    """Split the path of a `.gguf` file into the folder and the file name that transformers' `gguf_file` takes."""
    path = Path(path)
    return str(path.parent), path.name


def is_gguf(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` names a GGUF checkpoint file (by its `.gguf` suffix)."""
    return str(name_or_path).lower().endswith(".gguf")


def drop_quantization_config(model: PreTrainedModel) -> PreTrainedModel:
    """Make a model loaded from a GGUF file an ordinary float model that trains and saves.

    transformers dequantizes GGUF tensors on loading but keeps a `GgufConfig` as `quantization_config`, and
    `save_pretrained` then refuses to write the model: the weights are plain tensors, so the record goes.
    """
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    for attribute in ("hf_quantizer", "quantization_method"):
        if getattr(model, attribute, None) is not None:
            setattr(model, attribute, None)
    model.is_quantized = False
    return model


def load_model_and_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, **model_init_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a seq2seq or causal LM and its tokenizer from the Hub, a local folder or a `.gguf` file, picking the class
    by its config.

    A `.gguf` file (any architecture transformers' GGUF loader knows; needs the `gguf` package) is dequantized to
    float tensors and returned as an ordinary model that trains and saves with `save_pretrained`. A folder that a
    LoRA run saved (an adapter, `adapter_config.json`; needs `peft`) is loaded on its base model and merged into it.
    `trust_remote_code` stays off unless the caller turns it on. Causal tokenizers without a pad token get their EOS
    token as pad token.

    Args:
        name_or_path (`str`):
            A Hub id, a folder saved with `save_pretrained`, or the path of a `.gguf` file.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Run modelling code from the model's repository.
        **model_init_kwargs:
            Passed to `from_pretrained` (e.g. `dtype`).
    """
    if (Path(name_or_path) / "adapter_config.json").is_file():
        return _load_merged_adapter(name_or_path, trust_remote_code, **model_init_kwargs)
    location, extra = name_or_path, {}
    if is_gguf(name_or_path):
        location, gguf_file = split_gguf_path(name_or_path)
        extra = {"gguf_file": gguf_file}
    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, **extra)
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(location, trust_remote_code=trust_remote_code, **extra, **model_init_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **extra)
    if extra:
        drop_quantization_config(model)
    return model, prepare_tokenizer(tokenizer)


def _load_merged_adapter(
    path: str, trust_remote_code: bool, **model_init_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base model an adapter folder names, apply the adapter and merge it; the folder's own tokenizer."""
    from peft import PeftConfig, PeftModel

    base_name = PeftConfig.from_pretrained(path).base_model_name_or_path
    base, _ = load_model_and_tokenizer(base_name, trust_remote_code=trust_remote_code, **model_init_kwargs)
    model = PeftModel.from_pretrained(base, path).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model, prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer the pad token the trainer needs (its EOS token when it has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no EOS token; set `tokenizer.eos_token` before training.")
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer on `texts`, offline, in seconds.

    Byte-level BPE decodes losslessly, so generated text can be compared with gold text exactly. The result is a
    `PreTrainedTokenizerFast`: save it with `save_pretrained` and load it with `AutoTokenizer.from_pretrained`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_tiny_model(
    architecture: Architecture,
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 1024,
    seed: int = 0,
    initializer_range: float = 0.02,
) -> PreTrainedModel:
    """Build a small model with random weights from a config: T5-style (`"seq2seq"`) or Llama-style (`"causal"`).

    Used for offline smoke runs, tests and benchmarks: nothing is downloaded. No dropout: tiny models train briefly.
    A larger `initializer_range` (the standard deviation of the initial weights; T5's `initializer_factor` is set in
    proportion) makes attention patterns such as copying emerge sooner in such small models.
    """
    torch.manual_seed(seed)
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if architecture == "seq2seq":
        config = T5Config(
            d_model=hidden_size,
            d_ff=4 * hidden_size,
            d_kv=hidden_size // num_heads,
            num_layers=num_layers,
            num_decoder_layers=num_layers,
            num_heads=num_heads,
            decoder_start_token_id=tokenizer.pad_token_id,
            feed_forward_proj="relu",
            dropout_rate=0.0,
            initializer_factor=initializer_range / 0.02,
            tie_word_embeddings=True,
            **ids,
        )
        return AutoModelForSeq2SeqLM.from_config(config)
    if architecture == "causal":
        config = LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            bos_token_id=tokenizer.bos_token_id,
            tie_word_embeddings=True,
            initializer_range=initializer_range,
            **ids,
        )
        return AutoModelForCausalLM.from_config(config)
    raise ValueError(f"architecture must be 'seq2seq' or 'causal', got {architecture!r}")


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
) -> tuple[list[str], int]:
    """Generate for all prompts in one `generate` call; the `num_return_sequences` texts of a prompt are adjacent.

    For a causal model that samples several texts per prompt (or sees a prompt twice), each distinct prompt is
    prefilled once and its key-value cache repeated for its rows (see [`prefill_shared_prompts`]): the same
    distribution as `generate(..., num_return_sequences=k)`, without computing a prompt's keys and values k times.
    An encoder-decoder runs its encoder once per prompt already.

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
            Prefill each distinct prompt once (causal models). `False` lets `generate` repeat every prompt before
            its prefill; models whose cache cannot be shared fall back to that by themselves, with one warning.

    Returns:
        `(texts, n_truncated)`: the decoded, stripped new text, and how many prompts were cut to `max_prompt_length`.
    """
    encoder_decoder = is_encoder_decoder(model)
    inputs, n_truncated = encode_prompts(tokenizer, prompts, max_prompt_length, encoder_decoder, add_special_tokens)
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    options = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    options["eos_token_id"] = tokenizer.eos_token_id
    rows = [i for i in range(len(prompts)) for _ in range(num_return_sequences)]
    shared = None
    if share_prompt_cache and not encoder_decoder and len(set(prompts)) < len(rows):
        shared = prefill_shared_prompts(model, inputs, prompts, rows)
    if shared is None:
        # generate repeats the prompts for num_return_sequences only when it samples itself.
        sampler = num_return_sequences == 1
        options.update(sampling_options(do_sample, temperature, top_p, top_k, nucleus_sampler=sampler))
        output = model.generate(**inputs, num_return_sequences=num_return_sequences, **options)
    else:
        cache, row_inputs = shared
        options.update(sampling_options(do_sample, temperature, top_p, top_k))
        output = model.generate(**row_inputs, cache=cache, **options)
    new_tokens = output if encoder_decoder else output[:, inputs["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [text.strip() for text in texts], n_truncated


def sampling_options(
    do_sample: bool, temperature: float, top_p: float, top_k: int, nucleus_sampler: bool = True
) -> dict[str, Any]:
    """The `generate` options of greedy decoding or of sampling with `temperature`, `top_p` and `top_k`.

    Nucleus sampling (`top_p` < 1) goes through a [`~refiner_trl.sampling.NucleusSampler`] with greedy decoding:
    the same distribution as `do_sample=True`, without sorting the whole vocabulary at every token; the other
    settings, and every setting when `nucleus_sampler=False`, are given to `generate` as they are.

    Args:
        do_sample (`bool`):
            Sample instead of greedy decoding.
        temperature (`float`):
            Sampling temperature.
        top_p (`float`):
            Nucleus mass.
        top_k (`int`):
            Top-k filtering; `0` turns it off.
        nucleus_sampler (`bool`, *optional*, defaults to `True`):
            Whether nucleus sampling may use the sampler: not with `num_return_sequences` > 1, which greedy
            decoding refuses.
    """
    if not do_sample:
        return {"do_sample": False}
    if top_p >= 1.0 or not nucleus_sampler:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    from transformers import GenerationConfig, LogitsProcessorList

    from .sampling import NucleusSampler

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
    from transformers import DynamicCache

    firsts: dict[str, int] = {}
    for index, prompt in enumerate(prompts):
        firsts.setdefault(prompt, index)
    distinct = torch.tensor(sorted(set(firsts.values())), device=inputs["input_ids"].device)
    slot = {index: position for position, index in enumerate(distinct.tolist())}
    input_ids, attention_mask = inputs["input_ids"][distinct, :-1], inputs["attention_mask"][distinct]
    # The positions `generate` derives from the attention mask, so the cached tokens sit where it expects them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, :-1]
    config = _unwrapped(model).config
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


def _unwrapped(model: Any) -> Any:
    """The transformers model inside a PEFT, DDP or DeepSpeed wrapper (for its config and forward signature)."""
    inner = getattr(model, "module", model)  # DeepSpeed engine / DDP
    if hasattr(inner, "get_base_model"):  # PEFT
        inner = inner.get_base_model()
    return inner


def forward_parameters(model: Any) -> set[str]:
    """The names of the arguments of the `forward` of the transformers model inside `model`'s wrappers, if any.

    Args:
        model (`torch.nn.Module`):
            A transformers model, possibly wrapped by PEFT, DDP or DeepSpeed.
    """
    return set(inspect.signature(_unwrapped(model).forward).parameters)


def _unshareable_cache_reason(model: Any) -> str | None:
    """Why a prompt's key-value cache cannot be prefilled once and shared for this model, or `None` when it can."""
    peft_config = getattr(getattr(model, "module", model), "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning PEFT adapter puts its virtual tokens in the cache"
    inner = _unwrapped(model)
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
