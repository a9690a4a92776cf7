# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""A state dict (or checkpoint) only loads into a collection that hashes and lays out its ids the same way: the
extra state describes every table, and a mismatch names the table and the field."""

import pytest
import torch
from torchrec import KeyedJaggedTensor

from torchrec_memcom import (
    CompressedEmbeddingBagCollection,
    HashEmbeddingBagConfig,
    LMAEmbeddingBagConfig,
    MEmComEmbeddingBagConfig,
)


def _memcom(**kw: object) -> CompressedEmbeddingBagCollection:
    args = dict(name="t", num_embeddings=1000, embedding_dim=8, feature_names=["f"], num_shared_rows=64, num_buckets=4)
    args.update(kw)
    return CompressedEmbeddingBagCollection([MEmComEmbeddingBagConfig(**args)])


def test_same_tables_load() -> None:
    a, b = _memcom(), _memcom()
    b.load_state_dict(a.state_dict())
    ids = torch.arange(10)
    kjt = KeyedJaggedTensor.from_lengths_sync(["f"], ids, torch.ones_like(ids))
    assert torch.equal(a(kjt).values(), b(kjt).values())


@pytest.mark.parametrize(
    "other,match",
    [
        # same shapes (U is 64 x 8, w is 1000 long), other hash: loaded silently before
        (lambda: _memcom(num_buckets=8), r"table 't': the checkpoint has num_buckets=4, the model has num_buckets=8"),
        (
            lambda: CompressedEmbeddingBagCollection(
                [
                    HashEmbeddingBagConfig(
                        name="t",
                        num_embeddings=1000,
                        embedding_dim=8,
                        feature_names=["f"],
                        num_shared_rows=64,
                        num_buckets=4,
                    )
                ]
            ),  # fmt: skip
            r"table 't': the checkpoint has method='memcom', the model has method='hash'",
        ),
    ],
)
def test_other_tables_are_refused(other, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        other().load_state_dict(_memcom().state_dict())


def test_hash_size_and_lma_keys_are_checked() -> None:
    def hashed(n: int) -> CompressedEmbeddingBagCollection:
        return CompressedEmbeddingBagCollection(
            [HashEmbeddingBagConfig(name="h", num_embeddings=n, embedding_dim=8, feature_names=["f"],
                                    num_shared_rows=64, num_buckets=4)]
        )  # fmt: skip

    with pytest.raises(
        ValueError, match=r"table 'h': the checkpoint has num_embeddings=1000, the model has num_embeddings=5000"
    ):
        hashed(5000).load_state_dict(hashed(1000).state_dict())

    def lma(allocation: str) -> CompressedEmbeddingBagCollection:
        return CompressedEmbeddingBagCollection(
            [LMAEmbeddingBagConfig(name="l", num_embeddings=1000, embedding_dim=8, feature_names=["f"],
                                   memory_rows=50, chunk_size=4, allocation=allocation)]
        )  # fmt: skip

    with pytest.raises(ValueError, match=r"table 'l': the checkpoint has allocation='hashed', the model has"):
        lma("semantic").load_state_dict(lma("hashed").state_dict())


def test_lma_built_on_meta_loads_and_runs() -> None:
    # meta -> to_empty -> load_state_dict, no reset_parameters: every buffer the forward reads comes from the state
    # (or is derived from the config), none is left uninitialised
    cfg = LMAEmbeddingBagConfig(
        name="l", num_embeddings=300, embedding_dim=8, feature_names=["f"], memory_rows=50, chunk_size=4
    )
    source = CompressedEmbeddingBagCollection([cfg])
    ids = torch.arange(300)
    kjt = KeyedJaggedTensor.from_lengths_sync(["f", "g"], torch.cat([ids, ids % 7]), torch.ones(600, dtype=torch.int64))
    source.fit_signatures([kjt])  # context: feature g
    assert source.signature_coverage()["l"] == 1.0
    target = CompressedEmbeddingBagCollection([cfg], device="meta").to_empty(device="cpu")
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(kjt).values(), source(kjt).values(), rtol=0, atol=0)
