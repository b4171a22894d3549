"""The completion cross-entropy engine: the summed loss of each turn's completion tokens, in a few forwards.

A REFINER step scores the gold completion after every turn's prompt: rows of very different lengths (turn 0's short
prompts, the refine turns' long ones). [`CompletionEncoder`] renders (chat templates) and tokenizes the rows;
[`turn_loss_sums`] sorts the rows by length into at most `max_loss_forwards`
groups ([`length_groups`]), left-pads causal rows so that the completions end in the last column and computes only
the completion positions' logits (`logits_to_keep`): the same sums and gradients as one right-padded forward over all
rows with every position's logits, which [`reference_turn_losses`] computes for the tests to compare against.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .chat import (
    Prompt,
    is_conversation,
    prefix_mismatch,
    render_generation_prompts,
    render_prompt_completion,
    require_chat_template,
)
from .data import COMPLETION, LABEL_PAD, PROMPT, count_truncation, encode_prompt_completion, validate_prompt_completion
from .modeling import forward_parameters, unwrapped_model


class CompletionEncoder:
    """Renders and tokenizes prompt-completion rows for the completion loss, and warns of what it cuts.

    Strings are used as they are. Conversations are rendered with the chat template (TRL's `apply_chat_template`),
    whose special tokens are in the text; a prompt rendered otherwise than generation sees it (a template that is not
    prefix-preserving) is warned about once.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The tokenizer, with a pad token.
        max_prompt_length (`int`, *optional*):
            Prompts keep their last this many tokens.
        max_completion_length (`int`, *optional*):
            Completions are cut to this many tokens, EOS included.
        encoder_decoder (`bool`):
            Whether the model is an encoder-decoder (causal rows are left-padded).
        chat_template_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for the chat template.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_prompt_length: int | None,
        max_completion_length: int | None,
        encoder_decoder: bool,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.max_completion_length = max_completion_length
        self.encoder_decoder = encoder_decoder
        self.chat_template_kwargs = chat_template_kwargs
        self.warned_truncation = self.warned_chat_prefix = self.checked_chat_prefix = False

    def texts(self, prompts: list[Prompt], completions: list[Prompt]) -> tuple[list[str], list[str], bool]:
        """The prompt and completion texts, and whether to add special tokens when tokenizing them."""
        if not is_conversation(prompts[0]):
            return list(prompts), list(completions), True
        kwargs = self.chat_template_kwargs
        prompt_texts, completion_texts = render_prompt_completion(self.tokenizer, prompts, completions, kwargs)
        if not self.checked_chat_prefix:
            # Rendering every prompt a second time each step would double the chat rendering of the hot path.
            self.checked_chat_prefix = True
            mismatch = prefix_mismatch(render_generation_prompts(self.tokenizer, prompts, kwargs), prompt_texts)
            if mismatch is not None:
                self.warned_chat_prefix = True
                warnings.warn(
                    "The chat template is not prefix-preserving: it renders a prompt with the generation prompt "
                    "differently than followed by the completion, so the loss conditions the gold completion on a "
                    f"context that exploration does not sample from ({mismatch}). Use a template that renders both "
                    "the same way. This warning is shown once.",
                    stacklevel=4,
                )
        return prompt_texts, completion_texts, False

    def encode(self, prompts: list[Prompt], completions: list[Prompt]) -> tuple[dict[str, torch.Tensor], int]:
        """The rows' `input_ids`, `attention_mask` and `labels`, and how many prompts were cut (warned once)."""
        prompt_texts, completion_texts, add_special_tokens = self.texts(prompts, completions)
        batch, truncation = encode_prompt_completion(
            self.tokenizer, prompt_texts, completion_texts, self.max_prompt_length, self.max_completion_length,
            self.encoder_decoder, add_special_tokens=add_special_tokens, left_pad=not self.encoder_decoder,
        )  # fmt: skip
        if truncation.prompts and not self.warned_truncation:
            self.warned_truncation = True
            warnings.warn(
                f"{truncation.prompts} prompts of this batch exceed max_prompt_length={self.max_prompt_length} and "
                "keep only their last tokens; the count is logged as `truncated_prompts`. This warning is shown once.",
                stacklevel=3,
            )
        return batch, truncation.prompts

    def check_datasets(self, train_dataset: Any, eval_dataset: Any = None) -> None:
        """Check the datasets' format (and the chat template for conversations), and warn how many of their prompts
        and completions exceed the length limits."""
        datasets = {"train_dataset": train_dataset}
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_dataset[{key!r}]": dataset for key, dataset in eval_dataset.items()})
        elif eval_dataset is not None:
            datasets["eval_dataset"] = eval_dataset
        for name, dataset in datasets.items():
            if validate_prompt_completion(dataset, name):
                require_chat_template(self.tokenizer, f"{name}, row 0, {PROMPT!r}")
        for name, dataset in datasets.items():
            prompts, completions, add_special_tokens = self.texts(dataset[PROMPT], dataset[COMPLETION])
            cut = count_truncation(
                self.tokenizer, prompts, completions, self.max_prompt_length, self.max_completion_length,
                add_special_tokens,
            )  # fmt: skip
            if cut.prompts or cut.completions:
                warnings.warn(
                    f"{name}: {cut.prompts} of {len(dataset)} prompts exceed max_prompt_length="
                    f"{self.max_prompt_length} (they keep their last tokens) and {cut.completions} completions "
                    f"exceed max_completion_length={self.max_completion_length} (they are cut).",
                    stacklevel=3,
                )
        # Checked on the datasets' prompts; once more on the first batch, whose refine turns the datasets lack.
        self.checked_chat_prefix = self.warned_chat_prefix


def turn_loss_sums(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], num_turns: int, max_forwards: int, num_processes: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each turn's summed completion-token loss and its number of completion tokens.

    Args:
        model (`torch.nn.Module`):
            The model (possibly wrapped by DDP, PEFT or DeepSpeed).
        batch (`dict[str, torch.Tensor]`):
            `input_ids`, `attention_mask` and `labels` of [`~refiner_trl.data.encode_prompt_completion`], turn-major
            (the rows of turn 0, then those of turn 1, ...), causal rows left-padded.
        num_turns (`int`):
            The number of turns; every turn has as many rows.
        max_forwards (`int`):
            The most forwards (length groups) to split the rows into.
        num_processes (`int`, *optional*, defaults to `1`):
            With more than one process, every process runs `max_forwards` forwards (see [`length_groups`]).

    Returns:
        `(sums, counts)`, each of shape `(num_turns,)`.
    """
    label_counts = (batch["labels"] != LABEL_PAD).sum(dim=1)
    encoder_decoder = bool(getattr(unwrapped_model(model).config, "is_encoder_decoder", False))
    lengths = [(int(length),) for length in batch["attention_mask"].sum(dim=1).tolist()]
    if encoder_decoder:
        lengths = [(length, int(count)) for (length,), count in zip(lengths, label_counts.tolist())]
    turn_of_row = torch.arange(num_turns, device=label_counts.device).repeat_interleave(len(lengths) // num_turns)
    # Processes run the same number of forwards (their collectives must pair up), so it cannot follow lengths.
    groups = length_groups(lengths, max_forwards, 0.05 if num_processes == 1 else 0.0)
    sums = label_counts.new_zeros(num_turns, dtype=torch.float32)
    for number, rows in enumerate(groups):
        index = torch.tensor(rows, device=label_counts.device)
        # DDP's forward prepares the gradient reduction of the next backward: once per micro-batch. The backward of
        # the summed loss still reduces every weight's gradient once, summed over the groups.
        forward_model = model.module if number > 0 and isinstance(model, DistributedDataParallel) else model
        row_sums = completion_loss_sums(forward_model, {key: value[index] for key, value in batch.items()})
        sums = sums + sums.new_zeros(num_turns).index_add(0, turn_of_row[index], row_sums.float())
    counts = sums.new_zeros(num_turns).index_add(0, turn_of_row, label_counts.float())
    return sums, counts


def completion_loss_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One forward over a group of rows, cut to its own longest row; each row's summed completion-token loss."""
    labels = batch["labels"]
    label_width = int((labels != LABEL_PAD).sum(dim=1).max())
    width = int(batch["attention_mask"].sum(dim=1).max())
    config = unwrapped_model(model).config
    if getattr(config, "is_encoder_decoder", False):
        labels = labels[:, :label_width]
        logits = model(
            input_ids=batch["input_ids"][:, :width],
            attention_mask=batch["attention_mask"][:, :width],
            decoder_input_ids=shift_right(labels, config.decoder_start_token_id, config.pad_token_id),
            use_cache=False,
        ).logits
    else:
        # Left-padded: every completion ends in the last column, so its logits are the last label_width + 1.
        input_ids, attention_mask = batch["input_ids"][:, -width:], batch["attention_mask"][:, -width:]
        keep = min(label_width + 1, width)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        parameters = forward_parameters(model)
        if "position_ids" in parameters:  # the positions of the same tokens right-padded
            inputs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        if "logits_to_keep" in parameters:
            inputs["logits_to_keep"] = keep
        logits = model(**inputs).logits[:, -keep:][:, :-1]
        labels = labels[:, labels.shape[1] - keep + 1 :]
    token_losses = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
    )
    return token_losses.view(labels.shape).sum(dim=1)


def finite_or_skipped(
    loss: torch.Tensor, turn_losses: torch.Tensor, model: torch.nn.Module, action: str, where: str
) -> torch.Tensor:
    """A finite loss as it is; for a non-finite one, raise (`action="raise"`) or skip it (`"skip"`, warned).

    A skipped loss is zero times every trainable weight: the backward reaches each weight (as DDP expects) with a zero
    gradient, where `loss * 0` would carry NaN back through the activations. The value stays the non-finite loss,
    which the Trainer's `logging_nan_inf_filter` keeps out of the logged loss as it does for any such loss.
    """
    if bool(torch.isfinite(loss)):
        return loss
    if action == "raise":
        raise FloatingPointError(
            f"Non-finite training loss {loss.item()} at {where} (per-turn losses: {turn_losses.tolist()}); "
            "set nonfinite_loss='skip' to skip such micro-batches instead"
        )
    warnings.warn(f"Skipping a micro-batch with a non-finite training loss at {where}.", stacklevel=3)
    zero = sum((p.sum() * 0.0 for p in model.parameters() if p.requires_grad), loss.new_zeros(()))
    return loss.detach() + zero


def shift_right(labels: torch.Tensor, start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Decoder inputs of an encoder-decoder: the labels shifted right behind the start token, -100 as padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == LABEL_PAD, pad_token_id)


def reference_turn_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    turn_prompts: list[list[str]],
    completions: list[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
) -> torch.Tensor:
    """The per-turn mean token losses the straightforward way: one right-padded forward over every turn's rows, with
    the logits of every position. The reference the tests compare [`turn_loss_sums`] against.

    Args:
        model (`torch.nn.Module`):
            The model.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        turn_prompts (`list[list[str]]`):
            Each turn's prompts, one per example.
        completions (`list[str]`):
            The gold completions, one per example (the same in every turn).
        max_prompt_length (`int`, *optional*):
            Prompts are cut to this many tokens.
        max_completion_length (`int`, *optional*):
            Completions are cut to this many tokens.

    Returns:
        `torch.Tensor`: one mean token loss per turn.
    """
    config = unwrapped_model(model).config
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    num_turns, batch_size = len(turn_prompts), len(completions)
    batch, _ = encode_prompt_completion(
        tokenizer,
        [p for prompts in turn_prompts for p in prompts],
        completions * num_turns,
        max_prompt_length,
        max_completion_length,
        encoder_decoder,
    )
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    labels = batch.pop("labels")
    if encoder_decoder:
        batch["decoder_input_ids"] = shift_right(labels, config.decoder_start_token_id, tokenizer.pad_token_id)
        logits = model(**batch, use_cache=False).logits
    else:
        logits = model(**batch, use_cache=False).logits[:, :-1]
        labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
    ).view(num_turns, batch_size, -1)
    mask = (labels != LABEL_PAD).view(num_turns, batch_size, -1)
    return token_losses.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)


def length_groups(lengths: Sequence[Sequence[int]], max_groups: int, min_saving: float = 0.05) -> list[list[int]]:
    """Group rows of similar length so that padding each group to its longest row computes the fewest tokens.

    Rows are sorted by their total length and cut into at most `max_groups` runs of neighbours; the cut is the one
    computing the fewest tokens (exact for one padded dimension), and an extra group is used only when it saves at
    least `min_saving` of the tokens. Each group is one forward pass, so the groups' losses add up to the loss of one
    padded forward over all rows.

    Args:
        lengths (`Sequence[Sequence[int]]`):
            Per row, the length of each padded dimension: `(sequence,)` for a causal model, `(encoder, decoder)` for
            an encoder-decoder.
        max_groups (`int`):
            The most groups to return (at least 1).
        min_saving (`float`, *optional*, defaults to `0.05`):
            The share of the computed tokens an extra group must save. `0` always gives `min(max_groups, rows)`
            groups: a count that does not depend on the lengths, as processes that must run the same number of
            forwards (DDP's buffer broadcast, ZeRO-3's and FSDP's weight gathers) need.

    Returns:
        `list[list[int]]`: the row indices of each group, ascending within a group, groups from short to long.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, got {max_groups}")
    order = sorted(range(len(lengths)), key=lambda row: (sum(lengths[row]), row))
    n = len(order)
    if n == 0:
        return []

    def cost(start: int, end: int) -> int:
        rows = [lengths[row] for row in order[start:end]]
        return (end - start) * sum(max(dimension) for dimension in zip(*rows))

    # best[g][j]: fewest tokens for the first j sorted rows in g groups; cut[g][j]: where its last group starts.
    infinity = float("inf")
    best = [[infinity] * (n + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for groups in range(1, max_groups + 1):
        for end in range(1, n + 1):
            for start in range(groups - 1, end):
                total = best[groups - 1][start] + cost(start, end)
                if total < best[groups][end]:
                    best[groups][end], cut[groups][end] = total, start
    chosen = 1
    for groups in range(2, min(max_groups, n) + 1):
        if best[groups][n] <= (1 - min_saving) * best[chosen][n]:
            chosen = groups
    bounds, end = [], n
    for groups in range(chosen, 0, -1):
        start = cut[groups][end]
        bounds.append((start, end))
        end = start
    return [sorted(order[start:end]) for start, end in reversed(bounds)]
