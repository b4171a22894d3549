"""Loading and building models and tokenizers (seq2seq and causal alike); generation is in `generation.py`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
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


def unwrapped_model(model: Any) -> Any:
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
    return set(inspect.signature(unwrapped_model(model).forward).parameters)
