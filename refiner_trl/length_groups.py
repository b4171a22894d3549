"""Splitting a batch's rows into a few groups of similar length, so that padding each group wastes little."""

from __future__ import annotations

from collections.abc import Sequence


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
