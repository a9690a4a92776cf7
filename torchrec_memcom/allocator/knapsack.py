# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Multiple-choice knapsack: one option per group, total bytes within a budget, smallest total loss."""

from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["solve_knapsack"]


def solve_knapsack(
    options: Sequence[Sequence[Tuple[int, float]]], budget: int, max_states: int = 2_000_000
) -> Tuple[List[int], bool]:
    """Multiple-choice knapsack: one option ``(bytes, loss)`` per group with total bytes ``<= budget`` and the
    smallest total loss (ties: fewest bytes).

    Exact dynamic program over the Pareto frontier of (bytes, loss) partial sums; if a frontier would exceed
    ``max_states`` it is thinned to the best loss per byte bucket of ``budget / max_states`` (then ``exact`` is
    False; the answer still fits).

    Returns:
        Tuple[List[int], bool]: the chosen option index of every group, and whether the solution is exact.

    Raises:
        ValueError: a group without options, or a budget below the cheapest choice (naming the groups' minimums).
    """
    if any(len(g) == 0 for g in options):
        raise ValueError(
            f"every group needs at least one option; empty groups: {[i for i, g in enumerate(options) if not g]}"
        )
    mins = [min(b for b, _ in g) for g in options]
    if sum(mins) > budget:
        raise ValueError(f"budget {budget} bytes is below the cheapest choice ({sum(mins)} bytes: {mins} per group)")
    rest = np.concatenate([np.cumsum(mins[::-1])[::-1][1:], [0]])  # min bytes of the groups after each one
    state_bytes = np.zeros(1, dtype=np.int64)
    state_loss = np.zeros(1, dtype=np.float64)
    history: List[Tuple[np.ndarray, np.ndarray]] = []
    exact = True
    for g, group in enumerate(options):
        ob = np.array([b for b, _ in group], dtype=np.int64)
        ol = np.array([v for _, v in group], dtype=np.float64)
        nb = (state_bytes[:, None] + ob[None, :]).ravel()
        nl = (state_loss[:, None] + ol[None, :]).ravel()
        parent = np.repeat(np.arange(state_bytes.size), ob.size)
        choice = np.tile(np.arange(ob.size), state_bytes.size)
        keep = nb + rest[g] <= budget
        nb, nl, parent, choice = nb[keep], nl[keep], parent[keep], choice[keep]
        order = np.lexsort((nl, nb))  # by bytes, then loss
        nb, nl, parent, choice = nb[order], nl[order], parent[order], choice[order]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(nl)[:-1]])
        idx = np.flatnonzero(nl < best_before)  # the Pareto frontier: loss strictly falls as bytes grow
        if idx.size > max_states:
            exact = False
            bucket = (nb[idx] / (budget + 1.0) * max_states).astype(np.int64)
            idx = idx[np.concatenate([bucket[1:] != bucket[:-1], [True]])]  # the lowest loss of each bucket
        state_bytes, state_loss = nb[idx], nl[idx]
        history.append((parent[idx], choice[idx]))
    state = int(np.argmin(state_loss))  # frontier: losses strictly decrease with bytes, so this is unique
    chosen = [0] * len(options)
    for g in range(len(options) - 1, -1, -1):
        parent, choice = history[g]
        chosen[g] = int(choice[state])
        state = int(parent[state])
    return chosen, exact
