# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Full-ranking metrics for leave-one-out evaluation (one held-out item per user)."""

import math
from typing import Dict, Optional, Tuple

import torch

__all__ = ["full_ranking_metrics"]


def full_ranking_metrics(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    k: int = 10,
) -> Dict[str, torch.Tensor]:
    """Per-user rank, nDCG@k and Recall@k of one held-out item, ranked against all items.

    Each row of ``scores`` is one user's score for every item. The excluded ``(row, item)`` pairs (the user's
    training items, and for test also the validation item) leave that user's ranking; the target itself is never
    excluded. The target's 0-based ``rank`` is the number of remaining items scoring strictly higher *plus* the number
    tying with it (ties count against the target, so a constant scorer gets the worst rank, not the best). With a
    single relevant item, ``recall@k = [rank < k]`` and ``ndcg@k = [rank < k] / log2(rank + 2)`` (IDCG = 1). The
    reported number is the mean over users; returning per-user values lets callers evaluate users in chunks or on
    several ranks and average at the end.

    Args:
        scores (torch.Tensor): ``[U, I]`` float scores (higher = better).
        targets (torch.Tensor): ``[U]`` int64 held-out item of each row.
        exclude (Optional[Tuple[torch.Tensor, torch.Tensor]]): ``(rows, items)``, two int64 ``[E]`` tensors of
            pairs removed from the ranking; ``rows`` index ``scores``' rows.
        k (int): cut-off.

    Returns:
        Dict[str, torch.Tensor]: ``"rank"`` (int64), ``f"ndcg@{k}"`` and ``f"recall@{k}"`` (float), each ``[U]``.

    Raises:
        ValueError: on mismatched shapes or ``k < 1``.

    Example::

        scores = torch.tensor([[0.9, 0.1, 0.5, 0.7]])  # one user, four items
        # item 0 was trained on; the target is item 2; item 3 outranks it -> rank 1
        m = full_ranking_metrics(scores, torch.tensor([2]), (torch.tensor([0]), torch.tensor([0])), k=2)
        # m["rank"] = [1], m["recall@2"] = [1.0], m["ndcg@2"] = [1 / log2(3)]
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"need scores [U, I] and targets [U], got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    targets = targets.to(device=scores.device, dtype=torch.int64)
    target_scores = scores[rows, targets].unsqueeze(1)
    others = scores.clone()
    if exclude is not None:
        ex_rows, ex_items = (t.to(device=scores.device, dtype=torch.int64) for t in exclude)
        others[ex_rows, ex_items] = -math.inf
    others[rows, targets] = -math.inf
    rank = (others >= target_scores).sum(dim=1)
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.to(scores.dtype) + 2.0), torch.zeros((), dtype=scores.dtype))
    return {"rank": rank, f"ndcg@{k}": ndcg, f"recall@{k}": hit.to(scores.dtype)}
