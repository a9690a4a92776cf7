# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Plain-PyTorch reference math for the unit tests of the unsharded collections.

Nothing here calls a module's ``forward``: the reference reads the module's raw parameter tensors (or leaf copies of
them, keyed by FQN) and pools every bag with explicit loops, so the tests compare the modules against the math of
``DESIGN.md``:

- stock: ``E[i]``; hashing trick: ``U[h(i)]``; MEmCom: ``w[s(i)] * U[h(i)]``; bags pool ``sum_i x_i * e(i)`` (MEAN
  divides by the bag size, empty bags give zeros);
- QR: ``pool(x * Q[i // c]) * pool(R[i % c])`` with ``c`` = rows of ``R``.

Only the hash ``h`` and the scramble ``s`` come from the module (``bucketed_hash(table)``); they are tested on their
own in ``tests/modules/test_hashing.py``.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagCollection,
    MEmComEmbeddingBagCollection,
    QREmbeddingBagCollection,
)

Params = Dict[str, torch.Tensor]
# (ids (L,), input weights (L,) or None, pooling) -> pooled (d,)
BagFn = Callable[[torch.Tensor, Optional[torch.Tensor], PoolingType], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------- input


def random_kjt(
    id_ranges: Dict[str, int],
    batch_size: int,
    generator: torch.Generator,
    max_len: int = 4,
    weighted: bool = False,
    extra_keys: Sequence[str] = (),
) -> KeyedJaggedTensor:
    """A KJT with features ``id_ranges`` (feature -> n, ids uniform in ``[0, n)``), in reversed order.

    Bag 0 of every feature is empty; the ``extra_keys`` carry ids far outside every table (a module must ignore them).
    """
    keys = list(reversed(list(id_ranges))) + list(extra_keys)
    values, lengths = [], []
    for key in keys:
        n = id_ranges.get(key, 10**9)
        lens = torch.randint(0, max_len + 1, (batch_size,), generator=generator)
        lens[0] = 0
        lengths.append(lens)
        low = 0 if key in id_ranges else 10**6
        values.append(torch.randint(low, max(n, low + 1), (int(lens.sum()),), generator=generator))
    all_values = torch.cat(values)
    weights = torch.rand(all_values.shape, generator=generator) + 0.5 if weighted else None
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=all_values, lengths=torch.cat(lengths), weights=weights
    )


def kjt_bags(kjt: KeyedJaggedTensor, feature: str) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The bags ``(ids, input weights or None)`` of one feature, read off the KJT's flat values and lengths."""
    keys = kjt.keys()
    lengths = kjt.lengths().view(len(keys), -1)
    batch_size = lengths.size(1)
    start = int(lengths[: keys.index(feature)].sum())
    weights = kjt.weights_or_none()
    bags = []
    for b in range(batch_size):
        end = start + int(lengths[keys.index(feature), b])
        bags.append((kjt.values()[start:end], None if weights is None else weights[start:end]))
        start = end
    return bags


# -------------------------------------------------------------------------------------------------------------- pooling


def pool(rows: torch.Tensor, pooling: PoolingType) -> torch.Tensor:
    """Pools ``(L, d)`` rows into ``(d,)``: a sum, divided by ``max(L, 1)`` for MEAN."""
    total = rows.sum(dim=0)
    return total / max(rows.size(0), 1) if pooling == PoolingType.MEAN else total


def per_id_bag(embed: Callable[[torch.Tensor], torch.Tensor]) -> BagFn:
    """Bag of a table whose id ``i`` has its own embedding ``embed(i)``: ``pool(x_i * embed(i))``."""

    def bag(ids: torch.Tensor, x: Optional[torch.Tensor], pooling: PoolingType) -> torch.Tensor:
        rows = embed(ids.long())
        if x is not None:
            rows = rows * x.unsqueeze(1)
        return pool(rows, pooling)

    return bag


def stock_bag(table: torch.Tensor) -> BagFn:
    return per_id_bag(lambda ids: table[ids])


def hash_bag(shared: torch.Tensor, row_of: Callable[[torch.Tensor], torch.Tensor]) -> BagFn:
    return per_id_bag(lambda ids: shared[row_of(ids)])


def memcom_bag(
    shared: torch.Tensor,
    entity_weights: torch.Tensor,
    row_of: Callable[[torch.Tensor], torch.Tensor],
    scramble: Callable[[torch.Tensor], torch.Tensor],
) -> BagFn:
    return per_id_bag(lambda ids: entity_weights[scramble(ids)].unsqueeze(1) * shared[row_of(ids)])


def qr_bag(quotient: torch.Tensor, remainder: torch.Tensor) -> BagFn:
    """``pool(x * Q[i // c]) * pool(R[i % c])``, ``c`` = rows of ``R`` (the authors' ``QREmbeddingBag``)."""
    c = remainder.size(0)

    def bag(ids: torch.Tensor, x: Optional[torch.Tensor], pooling: PoolingType) -> torch.Tensor:
        ids = ids.long()
        q = quotient[torch.div(ids, c, rounding_mode="floor")]
        if x is not None:
            q = q * x.unsqueeze(1)
        return pool(q, pooling) * pool(remainder[ids % c], pooling)

    return bag


def reference_feature(
    kjt: KeyedJaggedTensor, feature: str, bag: BagFn, pooling: PoolingType, weighted: bool
) -> torch.Tensor:
    """``(B, d)`` pooled embeddings of one feature, one bag at a time (input weights only if ``weighted``)."""
    return torch.stack([bag(ids, x if weighted else None, pooling) for ids, x in kjt_bags(kjt, feature)])


# ------------------------------------------------------------------------------------------------- modules' reference


def leaf_copies(module: nn.Module) -> Params:
    """Detached, ``requires_grad`` copies of every parameter of ``module``, by FQN."""
    return {name: p.detach().clone().requires_grad_(True) for name, p in module.named_parameters()}


def _bags_of(module: nn.Module, params: Params, prefix: str) -> Dict[str, Tuple[BagFn, PoolingType]]:
    """feature -> (reference bag function, pooling) for every feature of ``module``."""
    bags: Dict[str, Tuple[BagFn, PoolingType]] = {}
    for t in module.embedding_bag_configs():
        if isinstance(module, EmbeddingBagCollection):
            bag = stock_bag(params[f"{prefix}embedding_bags.{t.name}.weight"])
            for f in t.feature_names:
                bags[f] = (bag, t.pooling)
            continue
        assert isinstance(module, CompressedEmbeddingBagCollection)
        kind = module.method_of(t.name).name
        tables = f"{prefix}_embedding_bag_collection.embedding_bags."
        if kind == "memcom":
            h = module.bucketed_hash(t.name)
            bag = memcom_bag(
                params[f"{tables}{t.name}.weight"], params[f"{prefix}entity_weights.{t.name}"], h, h.scramble
            )
        elif kind == "hash":
            bag = hash_bag(params[f"{tables}{t.name}.weight"], module.bucketed_hash(t.name))
        elif kind == "qr":
            bag = qr_bag(params[f"{tables}{t.name}__q.weight"], params[f"{tables}{t.name}__r.weight"])
        elif kind == "stock":
            bag = stock_bag(params[f"{tables}{t.name}.weight"])
        else:
            raise TypeError(f"no reference for {kind} tables")
        for f in t.feature_names:
            bags[f] = (bag, t.pooling)
    return bags


def reference_values(module: nn.Module, kjt: KeyedJaggedTensor, params: Optional[Params] = None) -> torch.Tensor:
    """``(B, sum of dims)``: every feature of every table in config order, from ``params`` (default: the module's)."""
    if params is None:
        params = {name: p.detach() for name, p in module.named_parameters()}
    bags = _bags_of(module, params, "")
    features = [f for t in module.embedding_bag_configs() for f in t.feature_names]
    weighted = module.is_weighted()
    return torch.cat([reference_feature(kjt, f, *bags[f], weighted) for f in features], dim=1)


def expected_keys_and_offsets(tables: Sequence[EmbeddingBagConfig]) -> Tuple[List[str], List[int]]:
    """Output keys (features in config order) and their ``offset_per_key``."""
    keys, offsets = [], [0]
    for t in tables:
        for f in t.feature_names:
            keys.append(f)
            offsets.append(offsets[-1] + t.embedding_dim)
    return keys, offsets


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Random values in every parameter (so that ``w != 1``, ``R != 1``: the reference must use them)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(
                torch.rand(p.shape, generator=generator) + 0.5
                if p.dim() == 1
                else torch.randn(p.shape, generator=generator)
            )


def tensor_bytes_allocated(module: nn.Module) -> int:
    """Bytes of every tensor the module holds (parameters and buffers), counted independently of the report."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def init_bound(num_embeddings: int) -> float:
    """TorchRec's default ``init_fn`` bound for a logical table of ``num_embeddings`` rows."""
    return math.sqrt(1 / num_embeddings)


# ------------------------------------------------------------------------------------------------------ shared set-ups

POOLINGS: Dict[str, Tuple[PoolingType, PoolingType]] = {
    "sum": (PoolingType.SUM, PoolingType.SUM),
    "mean": (PoolingType.MEAN, PoolingType.MEAN),
    "mixed": (PoolingType.SUM, PoolingType.MEAN),
}


def make_tables(method: str, pooling: str = "sum") -> List[EmbeddingBagConfig]:
    """Two small tables of one method: ``t0`` (n=200, d=8, features ``f0``, ``f0b``) and ``t1`` (n=500, d=4, ``f1``).

    ``t0`` gives its physical size (several buckets / a given ``c``), ``t1`` a compression ratio.
    """
    from torchrec_memcom import HashEmbeddingBagConfig, MEmComEmbeddingBagConfig, QREmbeddingBagConfig

    p0, p1 = POOLINGS[pooling]
    t0 = dict(name="t0", num_embeddings=200, embedding_dim=8, feature_names=["f0", "f0b"], pooling=p0)
    t1 = dict(name="t1", num_embeddings=500, embedding_dim=4, feature_names=["f1"], pooling=p1)
    if method == "memcom":
        return [
            MEmComEmbeddingBagConfig(**t0, num_shared_rows=32, num_buckets=4),
            MEmComEmbeddingBagConfig(**t1, compression_ratio=2.0),
        ]
    if method == "hash":
        return [
            HashEmbeddingBagConfig(**t0, num_shared_rows=32, num_buckets=4),
            HashEmbeddingBagConfig(**t1, compression_ratio=4.0),
        ]
    if method == "qr":
        return [QREmbeddingBagConfig(**t0, num_remainder_rows=16), QREmbeddingBagConfig(**t1, compression_ratio=3.0)]
    if method == "stock":
        return [EmbeddingBagConfig(**t0), EmbeddingBagConfig(**t1)]
    raise ValueError(method)


MODULE_TYPES = {
    "memcom": MEmComEmbeddingBagCollection,
    "hash": HashEmbeddingBagCollection,
    "qr": QREmbeddingBagCollection,
}


def id_ranges(tables: Sequence[EmbeddingBagConfig]) -> Dict[str, int]:
    return {f: t.num_embeddings for t in tables for f in t.feature_names}


# ------------------------------------------------------------------------------------------------ contract checks


def check_forward(module: nn.Module, kjt: KeyedJaggedTensor) -> None:
    """Output keys, offsets and values equal the reference."""
    out = module(kjt)
    keys, offsets = expected_keys_and_offsets(module.embedding_bag_configs())
    assert out.keys() == keys
    assert out.offset_per_key() == offsets
    assert out.values().shape == (kjt.stride(), offsets[-1])
    torch.testing.assert_close(out.values(), reference_values(module, kjt))


def check_gradients(module: nn.Module, kjt: KeyedJaggedTensor, generator: torch.Generator) -> None:
    """Every parameter's gradient equals autograd's through the reference, for a random upstream gradient."""
    params = leaf_copies(module)
    module.zero_grad(set_to_none=True)
    out = module(kjt).values()
    upstream = torch.randn(out.shape, generator=generator)
    (out * upstream).sum().backward()
    (reference_values(module, kjt, params) * upstream).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert not p.grad.is_sparse, name
        assert params[name].grad is not None, name
        torch.testing.assert_close(p.grad, params[name].grad, msg=lambda m, name=name: f"{name}: {m}")


def check_optimizer_steps(
    module: nn.Module, kjt: KeyedJaggedTensor, optimizer: type, generator: torch.Generator, steps: int = 2
) -> None:
    """``steps`` steps of ``optimizer`` over ``module.parameters()`` = the same steps on the reference copies."""
    params = leaf_copies(module)
    before = {name: p.detach().clone() for name, p in params.items()}
    opt = optimizer(module.parameters(), lr=0.1)
    opt_ref = optimizer(list(params.values()), lr=0.1)
    width = expected_keys_and_offsets(module.embedding_bag_configs())[1][-1]
    for _ in range(steps):
        upstream = torch.randn((kjt.stride(), width), generator=generator)
        opt.zero_grad()
        (module(kjt).values() * upstream).sum().backward()
        opt.step()
        opt_ref.zero_grad()
        (reference_values(module, kjt, params) * upstream).sum().backward()
        opt_ref.step()
    for name, p in module.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} did not train"
        torch.testing.assert_close(p.detach(), params[name].detach(), msg=lambda m, name=name: f"{name}: {m}")
