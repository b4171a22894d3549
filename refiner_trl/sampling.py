"""Temperature, top-k and nucleus (top-p) sampling without sorting the whole vocabulary at every token.

`generate(do_sample=True, top_p=p)` sorts all of a row's logits at every new token (transformers'
`TopPLogitsWarper`) and then draws from the whole vocabulary; on SmolLM2 (49,152 tokens) that sort was 20% of a
REFINER step's CPU time (docs/benchmarks.md, section 3). [`NucleusSampler`] finds the nucleus among a row's few
hundred most likely tokens (`torch.topk`), then among 16 times as many, falls back to the full sort for a row whose
nucleus is wider still, and draws the token itself: the same distribution as transformers' warpers.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, TopPLogitsWarper

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
