# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``IdTransform.combine``'s column plans against plain ``torch.cat`` of the physical outputs."""

from typing import List, Tuple

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedTensor

from torchrec_memcom.modules.method import Combine
from torchrec_memcom.modules.transform import _CombinePlan


def _tables(*specs: Tuple[str, int]) -> List[Tuple[str, EmbeddingBagConfig]]:
    return [
        (f, EmbeddingBagConfig(num_embeddings=10, embedding_dim=d, name=f"t_{f}", feature_names=[f])) for f, d in specs
    ]


def _pooled(keys: List[str], dims: List[int]) -> Tuple[KeyedTensor, torch.Tensor]:
    values = torch.randn(5, sum(dims), dtype=torch.float64, requires_grad=True)
    return KeyedTensor(keys=keys, length_per_key=dims, values=values), values


def test_permuted_chunks_gather_forward_and_backward() -> None:
    torch.manual_seed(0)
    # physical order: b's second chunk, a, b's first chunk (as a sharding may order them)
    keys, dims = ["b__c1", "a", "b__c0"], [2, 3, 2]
    pooled, values = _pooled(keys, dims)
    combines = [Combine("a", "one", ("a",)), Combine("b", "concat", ("b__c0", "b__c1"))]
    plan = _CombinePlan(combines, pooled, [], _tables(("a", 3), ("b", 4)))
    assert plan.simple and plan.permutation and not plan.identity
    out = plan(pooled, torch.empty(5, 0), None)
    a, b1, b0 = values[:, 2:5], values[:, 0:2], values[:, 5:7]
    expected = torch.cat([a, b0, b1], dim=1)
    assert out.keys() == ["a", "b"] and out.length_per_key() == [3, 4]
    torch.testing.assert_close(out.values(), expected, rtol=0, atol=0)
    assert plan.block_sizes == [2, 5] and plan.block_order == [1, 0]  # a and b__c0 are adjacent: one block
    assert type(out.values().grad_fn).__name__ == "CatBackward0"  # blocks moved by one copy, not a column gather
    upstream = torch.randn(5, 7, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out.values(), values, upstream)
    (reference,) = torch.autograd.grad(expected, values, upstream)
    torch.testing.assert_close(grad, reference, rtol=0, atol=0)


def test_repeated_columns_keep_the_scatter_add_backward() -> None:
    torch.manual_seed(1)
    keys, dims = ["s", "a"], [2, 2]
    pooled, values = _pooled(keys, dims)
    # one physical feature feeds two logical ones: not a permutation, its gradients must add up
    combines = [Combine("a", "concat", ("a", "s")), Combine("b", "one", ("s",))]
    plan = _CombinePlan(combines, pooled, [], _tables(("a", 4), ("b", 2)))
    assert plan.simple and not plan.permutation
    out = plan(pooled, torch.empty(5, 0), None)
    s, a = values[:, 0:2], values[:, 2:4]
    expected = torch.cat([a, s, s], dim=1)
    torch.testing.assert_close(out.values(), expected, rtol=0, atol=0)
    upstream = torch.randn(5, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out.values(), values, upstream)
    (reference,) = torch.autograd.grad(expected, values, upstream)
    torch.testing.assert_close(grad, reference, rtol=0, atol=0)
