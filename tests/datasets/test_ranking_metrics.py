# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""full_ranking_metrics against hand-computed ranks, nDCG and recall."""

import math

import pytest
import torch

from torchrec_memcom.datasets import full_ranking_metrics


def test_hand_computed_example() -> None:
    # 3 users x 6 items.
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # target 3; items 0, 1 excluded -> only item 2 above: rank 1
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 0, nothing excluded: 5 items above -> rank 5
            [0.5, 0.5, 0.5, 0.1, 0.9, 0.0],  # target 1; item 4 excluded; items 0, 2 tie (count against) -> rank 2
        ]
    )
    targets = torch.tensor([3, 0, 1])
    exclude = (torch.tensor([0, 0, 2]), torch.tensor([0, 1, 4]))
    m = full_ranking_metrics(scores, targets, exclude, k=2)
    assert m["rank"].tolist() == [1, 5, 2]
    assert m["recall@2"].tolist() == [1.0, 0.0, 0.0]
    assert m["ndcg@2"].tolist() == pytest.approx([1 / math.log2(3), 0.0, 0.0])
    m3 = full_ranking_metrics(scores, targets, exclude, k=3)
    assert m3["recall@3"].tolist() == [1.0, 0.0, 1.0]
    assert m3["ndcg@3"].tolist() == pytest.approx([1 / math.log2(3), 0.0, 0.5])
    assert m3["ndcg@3"].mean().item() == pytest.approx((1 / math.log2(3) + 0.5) / 3)
    # Without exclusions user 0 drops to rank 3 and user 2 to rank 3 (item 4 is back above it).
    assert full_ranking_metrics(scores, targets, k=2)["rank"].tolist() == [3, 5, 3]


def test_target_never_excluded_and_input_untouched() -> None:
    scores = torch.tensor([[0.2, 0.9, 0.1]])
    before = scores.clone()
    m = full_ranking_metrics(scores, torch.tensor([0]), (torch.tensor([0, 0]), torch.tensor([0, 1])), k=1)
    assert m["rank"].tolist() == [0] and m["ndcg@1"].tolist() == [1.0]
    assert torch.equal(scores, before)


def test_constant_scores_rank_last() -> None:
    m = full_ranking_metrics(torch.zeros(2, 5), torch.tensor([0, 4]), k=10)
    assert m["rank"].tolist() == [4, 4]


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        full_ranking_metrics(torch.zeros(2, 5), torch.tensor([0]))
    with pytest.raises(ValueError):
        full_ranking_metrics(torch.zeros(2, 5), torch.tensor([0, 1]), k=0)
