# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``IdTransform.combine``'s column plans against plain ``torch.cat`` of the physical outputs."""

from typing import List, Tuple

import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedTensor

from tests.interpreted import run_interpreted
from torchrec_memcom.modules.combine import CombinePlan
from torchrec_memcom.modules.method import Combine
from torchrec_memcom.ops.columns import ColumnProducts, column_products


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
    plan = CombinePlan(combines, pooled, [], _tables(("a", 3), ("b", 4)))
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


def test_whole_features_out_of_order_are_relabelled_without_a_copy_unless_the_order_is_kept() -> None:
    torch.manual_seed(3)
    # physical order as a sharding may give it: the stock feature s between the two chunked features' runs
    keys, dims = ["b__c0", "b__c1", "s", "a__c0", "a__c1"], [2, 2, 3, 1, 1]
    pooled, values = _pooled(keys, dims)
    combines = [
        Combine("a", "concat", ("a__c0", "a__c1")),
        Combine("s", "one", ("s",)),
        Combine("b", "concat", ("b__c0", "b__c1")),
    ]
    tables = _tables(("a", 2), ("s", 3), ("b", 4))
    expected = {"a": values[:, 7:9], "s": values[:, 4:7], "b": values[:, 0:4]}
    ordered = CombinePlan(combines, pooled, [], tables)(pooled, torch.empty(5, 0), None)
    assert ordered.keys() == ["a", "s", "b"] and type(ordered.values().grad_fn).__name__ == "CatBackward0"
    plan = CombinePlan(combines, pooled, [], tables, keep_order=False)
    out = plan(pooled, torch.empty(5, 0), None)
    assert plan.relabel and out.keys() == ["b", "s", "a"] and out.length_per_key() == [4, 3, 2]
    assert out.values() is values  # the same tensor: nothing copied, the gradient flows straight through
    for key, got in out.to_dict().items():
        torch.testing.assert_close(got, expected[key], rtol=0, atol=0)
        torch.testing.assert_close(got, ordered[key], rtol=0, atol=0)
    # a feature whose runs are apart or out of order (b's chunks here) still gets its columns moved, in table order
    swapped = ["b__c1", "b__c0", "s", "a__c0", "a__c1"]
    pooled_swapped, _ = _pooled(swapped, dims)
    plan = CombinePlan(combines, pooled_swapped, [], tables, keep_order=False)
    assert plan.permutation and not plan.relabel
    assert plan(pooled_swapped, torch.empty(5, 0), None).keys() == ["a", "s", "b"]


def test_repeated_columns_keep_the_scatter_add_backward() -> None:
    torch.manual_seed(1)
    keys, dims = ["s", "a"], [2, 2]
    pooled, values = _pooled(keys, dims)
    # one physical feature feeds two logical ones: not a permutation, its gradients must add up
    combines = [Combine("a", "concat", ("a", "s")), Combine("b", "one", ("s",))]
    plan = CombinePlan(combines, pooled, [], _tables(("a", 4), ("b", 2)))
    assert plan.simple and not plan.permutation
    out = plan(pooled, torch.empty(5, 0), None)
    s, a = values[:, 0:2], values[:, 2:4]
    expected = torch.cat([a, s, s], dim=1)
    torch.testing.assert_close(out.values(), expected, rtol=0, atol=0)
    upstream = torch.randn(5, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out.values(), values, upstream)
    (reference,) = torch.autograd.grad(expected, values, upstream)
    torch.testing.assert_close(grad, reference, rtol=0, atol=0)


def check_column_products(device: str = "cpu", dtype: torch.dtype = torch.float64) -> None:
    """QR products, LMA chunk concatenation and MEAN division in a shuffled physical order, through one
    ``ColumnProducts`` (the Triton kernel on CUDA or under the interpreter), against plain tensor arithmetic."""
    torch.manual_seed(2)
    keys = ["q__r", "a", "l__c1", "q__q", "l__c0", "m__q", "m__r", "s"]
    dims = [4, 3, 2, 4, 2, 4, 4, 5]
    values = torch.randn(37, sum(dims), dtype=dtype, device=device, requires_grad=True)
    pooled = KeyedTensor(keys=keys, length_per_key=dims, values=values)
    combines = [
        Combine("a", "one", ("a",), mean=True),
        Combine("q", "product", ("q__q", "q__r")),
        Combine("l", "concat", ("l__c0", "l__c1"), mean=True),
        Combine("m", "product", ("m__q", "m__r"), mean=True),
        Combine("s", "one", ("s",)),
    ]
    plan = CombinePlan(combines, pooled, [0, 2, 3], _tables(("a", 3), ("q", 4), ("l", 4), ("m", 4), ("s", 5)))
    assert not plan.simple and plan.products is not None
    # MEAN divisors are bag sizes (>= 1), stored transposed as the transform makes them
    divisors = torch.randint(1, 9, (3, 37), device=device).t().to(torch.float32)
    out = plan(pooled, divisors, None)
    assert type(out.values().grad_fn).__name__ == "_ColumnProductsFunctionBackward"
    v = values.split(dims, dim=1)
    qr, a, l1, qq, l0, mq, mr, s = v
    d = divisors.to(dtype)
    expected = torch.cat(
        [a / d[:, 0:1], qq * qr, torch.cat([l0, l1], dim=1) / d[:, 1:2], mq * mr / d[:, 2:3].pow(2), s], dim=1
    )
    assert out.keys() == ["a", "q", "l", "m", "s"] and out.length_per_key() == [3, 4, 4, 4, 5]
    torch.testing.assert_close(out.values(), expected)
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(out.values(), values, upstream)
    (reference,) = torch.autograd.grad(expected, values, upstream)
    torch.testing.assert_close(grad, reference)
    # without MEAN tables the kernel skips the divisors
    plain = CombinePlan(combines[1:2] + combines[4:], pooled, [], _tables(("q", 4), ("s", 5)))
    torch.testing.assert_close(plain(pooled, divisors[:, :0], None).values(), torch.cat([qq * qr, s], dim=1))


def test_products_concatenations_and_means_in_one_kernel() -> None:
    check_column_products()


def test_column_products_interpreted() -> None:
    """The Triton kernel's arithmetic through Triton's CPU interpreter (float32 and float64)."""
    run_interpreted("tests.modules.test_combine", "check_column_products_float32_and_64")


def check_column_products_float32_and_64() -> None:
    from torchrec_memcom.ops import triton_enabled

    assert triton_enabled(torch.zeros(1)), "run under TRITON_INTERPRET=1 with triton installed"
    check_column_products("cpu", torch.float32)
    check_column_products("cpu", torch.float64)


@pytest.mark.gpu
def test_column_products_cuda() -> None:
    check_column_products("cuda", torch.float32)


def test_a_column_feeding_two_products_keeps_the_split_path() -> None:
    torch.manual_seed(3)
    keys, dims = ["q", "r"], [2, 2]
    pooled, values = _pooled(keys, dims)
    combines = [Combine("x", "product", ("q", "r")), Combine("y", "product", ("q", "q"))]
    plan = CombinePlan(combines, pooled, [], _tables(("x", 2), ("y", 2)))
    assert plan.products is None  # q feeds two outputs: its gradient is a sum
    out = plan(pooled, torch.empty(5, 0), None)
    q, r = values[:, 0:2], values[:, 2:4]
    expected = torch.cat([q * r, q * q], dim=1)
    torch.testing.assert_close(out.values(), expected, rtol=0, atol=0)
    upstream = torch.randn(5, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out.values(), values, upstream)
    (reference,) = torch.autograd.grad(expected, values, upstream)
    torch.testing.assert_close(grad, reference)


def test_column_products_reject_a_shared_column_and_bad_entries() -> None:
    with pytest.raises(ValueError, match="input column 1 feeds output columns 0 and 1"):
        ColumnProducts([(0, 1, -1, 0), (1, -1, -1, 0)], 2)
    with pytest.raises(ValueError, match=r"not in \[0, 2\)"):
        ColumnProducts([(2, -1, -1, 0)], 2)
    with pytest.raises(ValueError, match="power 1 with mean column -1"):
        ColumnProducts([(0, -1, -1, 1)], 2)
    with pytest.raises(ValueError, match=r"expected \(B, 2\)"):
        column_products(torch.zeros(3, 3), torch.zeros(3, 0), ColumnProducts([(0, 1, -1, 0)], 2))
