# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""LSH signatures and LMA chunk locations (``torchrec_memcom.lsh``) against brute-force references.

References are plain Python over sets and lists: a context token of value ``u`` of the ``c``-th context feature is
``u * 256 + c``, MinHash key ``j`` of an entity is ``min over its tokens of mix(token, salt=mix(1000 + j)) mod 15`` and
15 means "never seen"; chunk ``k``'s location is ``mix(code_k, salt=k) mod rows`` where ``code_k`` packs the selected
keys 4 bits apiece. Only ``hashing.mix`` (the documented hash family) is shared with the code under test.
"""

import random
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom import LMAEmbeddingBagCollection, LMAEmbeddingBagConfig
from torchrec_memcom.hashing import mix
from torchrec_memcom.lsh import (
    MISSING_KEY,
    SignatureBuilder,
    build_signatures,
    chunk_key_selection,
    chunk_locations,
    co_occurrence_pairs,
    pack_keys,
    unpack_keys,
)

Rows = Dict[str, List[List[int]]]  # feature -> one list of ids per row


def _kjt(rows: Rows) -> KeyedJaggedTensor:
    keys = list(rows)
    values = [v for k in keys for bag in rows[k] for v in bag]
    lengths = [len(bag) for k in keys for bag in rows[k]]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.tensor(values, dtype=torch.int64), lengths=torch.tensor(lengths, dtype=torch.int64)
    )


def _random_rows(
    rng: random.Random, num_rows: int, spec: Dict[str, Tuple[int, int, int]], never: Optional[Dict[str, int]] = None
) -> Rows:
    """Rows with ``spec[f] = (num ids, min bag, max bag)``; ids of ``f`` stay below ``never[f]`` when given."""
    never = never or {}
    return {
        f: [[rng.randrange(never.get(f, n)) for _ in range(rng.randint(lo, hi))] for _ in range(num_rows)]
        for f, (n, lo, hi) in spec.items()
    }


def _contexts(rows: Rows, features: Sequence[str], context: Sequence[str]) -> Dict[int, Set[int]]:
    """Brute force: entity -> set of tokens ``u * 256 + c_index`` of context values in the same rows."""
    out: Dict[int, Set[int]] = {}
    num_rows = len(rows[features[0]])
    for r in range(num_rows):
        for f in features:
            for v in rows[f][r]:
                s = out.setdefault(v, set())
                for ci, c in enumerate(context):
                    s.update(u * 256 + ci for u in rows[c][r])
    return out


def _minhash_salt(j: int) -> int:
    return int(mix(torch.tensor(1000 + j)))


def _reference_keys(contexts: Dict[int, Set[int]], num_entities: int, num_keys: int) -> torch.Tensor:
    keys = torch.full((num_entities, num_keys), 15, dtype=torch.int64)
    for v, toks in contexts.items():
        if not toks:
            continue
        t = torch.tensor(sorted(toks), dtype=torch.int64)
        for j in range(num_keys):
            keys[v, j] = int(mix(t, salt=_minhash_salt(j)).min()) % 15
    return keys


def _reference_location(keys_row: Sequence[int], selection: torch.Tensor, chunk: int, rows: int) -> int:
    code = sum(int(keys_row[int(s)]) << (4 * i) for i, s in enumerate(selection[chunk]))
    return int(mix(torch.tensor([code]), salt=chunk)[0]) % rows


# ----------------------------------------------------------------------------------------------------------------
# packing


@pytest.mark.parametrize("signature_bytes", [4, 8, 16])
def test_pack_unpack_round_trip(signature_bytes: int) -> None:
    g = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 16, (37, 2 * signature_bytes), generator=g)
    packed = pack_keys(keys)
    assert packed.dtype == torch.uint8 and packed.shape == (37, signature_bytes)
    # byte b holds key 2b in the low nibble and key 2b+1 in the high nibble
    expected = torch.tensor(
        [[int(keys[i, 2 * b]) | int(keys[i, 2 * b + 1]) << 4 for b in range(signature_bytes)] for i in range(37)],
        dtype=torch.uint8,
    )
    torch.testing.assert_close(packed, expected, rtol=0, atol=0)
    torch.testing.assert_close(unpack_keys(packed), keys, rtol=0, atol=0)
    all_missing = pack_keys(torch.full((2, 2 * signature_bytes), MISSING_KEY))
    assert bool((all_missing == 255).all())


# ----------------------------------------------------------------------------------------------------------------
# co-occurrence


def test_co_occurrence_pairs_brute_force() -> None:
    rng = random.Random(1)
    rows = _random_rows(rng, 40, {"item": (30, 0, 3), "user": (50, 0, 2), "genre": (8, 0, 4)})
    rows["item"][0], rows["genre"][1], rows["user"][2] = [], [], []  # explicit empty bags
    rows["item"][3], rows["user"][3], rows["genre"][3] = [], [], []
    fd = _kjt(rows).to_dict()
    ent, tok = co_occurrence_pairs(fd, ["item"], ["user", "genre"])
    assert ent.dtype == torch.int64 and tok.dtype == torch.int64
    got = sorted(zip(ent.tolist(), tok.tolist()))
    want = sorted(
        (v, u * 256 + ci)
        for r in range(40)
        for v in rows["item"][r]
        for ci, c in enumerate(["user", "genre"])
        for u in rows[c][r]
    )
    assert got == want and len(want) > 0


def test_co_occurrence_pairs_several_entity_features() -> None:
    rng = random.Random(2)
    rows = _random_rows(rng, 25, {"a": (20, 0, 2), "b": (20, 1, 3), "ctx": (9, 0, 3)})
    ent, tok = co_occurrence_pairs(_kjt(rows).to_dict(), ["a", "b"], ["ctx"])
    want = sorted((v, u * 256) for r in range(25) for f in ("a", "b") for v in rows[f][r] for u in rows["ctx"][r])
    assert sorted(zip(ent.tolist(), tok.tolist())) == want


def test_co_occurrence_pairs_all_empty() -> None:
    rows: Rows = {"item": [[], []], "user": [[1], []]}
    ent, tok = co_occurrence_pairs(_kjt(rows).to_dict(), ["item"], ["user"])
    assert ent.numel() == 0 and tok.numel() == 0


# ----------------------------------------------------------------------------------------------------------------
# MinHash keys


@pytest.mark.parametrize("signature_bytes", [4, 8])
def test_minhash_keys_match_brute_force(signature_bytes: int) -> None:
    rng = random.Random(3)
    n = 40
    rows = _random_rows(rng, 60, {"item": (n, 0, 2), "user": (100, 1, 2), "genre": (10, 0, 3)}, never={"item": 34})
    builder = build_signatures([_kjt(rows)], [("t", n, ["item"], ["user", "genre"])], [signature_bytes])[0]
    ref = _reference_keys(_contexts(rows, ["item"], ["user", "genre"]), n, 2 * signature_bytes)
    torch.testing.assert_close(builder.keys(), ref, rtol=0, atol=0)
    torch.testing.assert_close(builder.signatures(), pack_keys(ref), rtol=0, atol=0)
    assert bool((builder.keys()[34:] == MISSING_KEY).all())  # never seen


def test_minhash_streaming_blocks_and_batches_agree() -> None:
    """Tiny hash blocks and a split into several batches give the same keys as one pass."""
    rng = random.Random(4)
    rows = _random_rows(rng, 50, {"item": (30, 1, 2), "user": (70, 1, 3)})
    fd = _kjt(rows).to_dict()
    ent, tok = co_occurrence_pairs(fd, ["item"], ["user"])
    small = SignatureBuilder(30, 4, block=7)
    small.update(ent[:50], tok[:50])
    small.update(ent[50:], tok[50:])
    ref = _reference_keys(_contexts(rows, ["item"], ["user"]), 30, 8)
    torch.testing.assert_close(small.keys(), ref, rtol=0, atol=0)


def test_default_context_is_every_other_feature() -> None:
    rng = random.Random(5)
    rows = _random_rows(rng, 30, {"user": (40, 1, 1), "item": (25, 0, 2), "genre": (6, 0, 3)})
    builder = build_signatures([_kjt(rows)], [("t", 25, ["item"], None)], [4])[0]
    ref = _reference_keys(_contexts(rows, ["item"], ["user", "genre"]), 25, 8)  # KJT key order, minus "item"
    torch.testing.assert_close(builder.keys(), ref, rtol=0, atol=0)


def test_signatures_several_features_per_table() -> None:
    rng = random.Random(6)
    rows = _random_rows(rng, 40, {"a": (20, 0, 2), "b": (20, 0, 2), "ctx": (30, 1, 2)})
    builder = build_signatures([_kjt(rows)], [("t", 20, ["a", "b"], ["ctx"])], [8])[0]
    ref = _reference_keys(_contexts(rows, ["a", "b"], ["ctx"]), 20, 16)
    torch.testing.assert_close(builder.keys(), ref, rtol=0, atol=0)


def test_coverage_is_fraction_seen() -> None:
    rng = random.Random(7)
    rows = _random_rows(rng, 20, {"item": (50, 1, 1), "user": (10, 1, 1)})
    builder = build_signatures([_kjt(rows)], [("t", 50, ["item"], ["user"])], [4])[0]
    seen = {v for bag in rows["item"] for v in bag}
    assert builder.coverage() == pytest.approx(len(seen) / 50)
    assert SignatureBuilder(10, 4).coverage() == 0.0


def test_entity_with_empty_context_has_no_signature() -> None:
    rows: Rows = {"item": [[1], [2], [1]], "user": [[], [5], []]}
    builder = build_signatures([_kjt(rows)], [("t", 4, ["item"], ["user"])], [4])[0]
    keys = builder.keys()
    assert bool((keys[1] == MISSING_KEY).all())  # item 1 only ever seen without users
    assert bool((keys[2] != MISSING_KEY).any())
    assert builder.coverage() == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------------------------
# fit_signatures on the module


def _lma(n: int, **kw) -> LMAEmbeddingBagCollection:
    t = LMAEmbeddingBagConfig(
        name="items", num_embeddings=n, embedding_dim=16, feature_names=["item"], memory_rows=97, **kw
    )
    return LMAEmbeddingBagCollection([t])


def test_fit_signatures_max_rows_over_batches() -> None:
    rng = random.Random(8)
    n = 60
    rows = _random_rows(rng, 50, {"item": (n, 0, 2), "user": (80, 1, 2)})
    batches = [_kjt({f: rows[f][lo : lo + 10] for f in rows}) for lo in range(0, 50, 10)]
    module = _lma(n, chunk_size=4, signature_bytes=8)
    coverage = module.fit_signatures(batches, max_rows=25)
    first = {f: rows[f][:25] for f in rows}
    contexts = _contexts(first, ["item"], ["user"])
    ref = _reference_keys(contexts, n, 16)
    torch.testing.assert_close(unpack_keys(module.table_signatures("items")), ref, rtol=0, atol=0)
    assert coverage == {"items": pytest.approx(sum(1 for s in contexts.values() if s) / n)}
    # rows past max_rows left no trace: an id only seen there has no signature
    later_only = {v for bag in rows["item"][25:] for v in bag} - set(contexts)
    for v in later_only:
        assert bool((ref[v] == MISSING_KEY).all())


def test_fit_signatures_whole_stream_without_max_rows() -> None:
    rng = random.Random(9)
    rows = _random_rows(rng, 30, {"item": (40, 1, 2), "user": (50, 1, 1)})
    batches = [_kjt({f: rows[f][lo : lo + 7] for f in rows}) for lo in range(0, 30, 7)]
    module = _lma(40, chunk_size=8, signature_bytes=4)
    module.fit_signatures(batches)
    ref = _reference_keys(_contexts(rows, ["item"], ["user"]), 40, 8)
    torch.testing.assert_close(unpack_keys(module.table_signatures("items")), ref, rtol=0, atol=0)


def test_fit_signatures_rejects_bad_input() -> None:
    module = _lma(10, chunk_size=4, context_features=["user"])
    with pytest.raises(ValueError, match="missing"):
        module.fit_signatures([_kjt({"item": [[1]], "other": [[2]]})])
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        module.fit_signatures([_kjt({"item": [[12]], "user": [[2]]})])


# ----------------------------------------------------------------------------------------------------------------
# chunk locations


def test_chunk_locations_match_reference() -> None:
    rng = random.Random(10)
    n, rows_m = 30, 211
    rows = _random_rows(rng, 40, {"item": (n, 1, 1), "user": (20, 1, 2)}, never={"item": 25})
    module = LMAEmbeddingBagCollection(
        [
            LMAEmbeddingBagConfig(
                name="items",
                num_embeddings=n,
                embedding_dim=16,
                feature_names=["item"],
                memory_rows=rows_m,
                chunk_size=4,
                keys_per_chunk=3,
            )
        ]
    )
    module.fit_signatures([_kjt(rows)])
    sel = module.key_selection("items")
    assert sel.shape == (4, 3)
    assert all(len(set(r.tolist())) == 3 and 0 <= min(r.tolist()) and max(r.tolist()) < 16 for r in sel)
    keys = _reference_keys(_contexts(rows, ["item"], ["user"]), n, 16)
    ids = torch.arange(n)
    loc = module.locations("items", ids)
    assert loc.shape == (n, 4) and loc.dtype == torch.int64
    assert int(loc.min()) >= 0 and int(loc.max()) < rows_m
    for i in range(n):
        if int(keys[i, 0]) == MISSING_KEY:
            continue
        assert loc[i].tolist() == [_reference_location(keys[i].tolist(), sel, k, rows_m) for k in range(4)]


def test_chunk_key_selection_is_fixed_and_valid() -> None:
    a = chunk_key_selection(8, 16, 5)
    b = chunk_key_selection(8, 16, 5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (8, 5)
    for r in a.tolist():
        assert len(set(r)) == 5 and all(0 <= x < 16 for x in r)
    with pytest.raises(ValueError):
        chunk_key_selection(4, 8, 9)


def test_identical_contexts_identical_signatures_and_locations() -> None:
    rng = random.Random(11)
    rows = _random_rows(rng, 80, {"item": (50, 0, 2), "user": (60, 1, 3)}, never={"item": 40})
    for r in range(80):  # items 41 and 43 always appear together, so their contexts are identical
        if r % 3 == 0:
            rows["item"][r] = rows["item"][r] + [41, 43]
    module = LMAEmbeddingBagCollection(
        [
            LMAEmbeddingBagConfig(
                name="items", num_embeddings=50, embedding_dim=32, feature_names=["item"], memory_rows=5003
            )
        ]
    )
    module.fit_signatures([_kjt(rows)])
    sig = module.table_signatures("items")
    torch.testing.assert_close(sig[41], sig[43], rtol=0, atol=0)
    assert bool((sig[41] != 255).any())
    loc = module.locations("items", torch.tensor([41, 43, 41]))
    torch.testing.assert_close(loc[0], loc[1], rtol=0, atol=0)
    torch.testing.assert_close(loc[0], loc[2], rtol=0, atol=0)
    # an unrelated entity with a signature shares far fewer chunks
    other = module.locations("items", torch.tensor([0, 1, 2, 3]))
    assert float((other == loc[:1]).float().mean()) < 0.5


def _pairs_with_jaccard(
    num_pairs: int, union: int, inter: int, token_pool: torch.Tensor, start: int
) -> Tuple[List[torch.Tensor], List[torch.Tensor], int]:
    """Pairs (2p, 2p+1) whose token sets share ``inter`` of ``union`` tokens: Jaccard = inter / union."""
    only = (union - inter) // 2
    ents, toks = [], []
    per_pair = inter + 2 * only
    for p in range(num_pairs):
        t = token_pool[start + p * per_pair : start + (p + 1) * per_pair]
        common, a_only, b_only = t[:inter], t[inter : inter + only], t[inter + only :]
        for e, s in ((2 * p, torch.cat([common, a_only])), (2 * p + 1, torch.cat([common, b_only]))):
            ents.append(torch.full((s.numel(),), e, dtype=torch.int64))
            toks.append(s)
    return ents, toks, start + num_pairs * per_pair


def test_similar_contexts_share_more_chunks() -> None:
    """Seeded: pairs with Jaccard 0.8 share clearly more chunk locations than pairs with Jaccard 0.1."""
    g = torch.Generator().manual_seed(2026)
    num_pairs, union = 300, 20
    # realistic tokens: small values u of context feature 1, i.e. u * 256 + 1
    pool = torch.randperm(50_000, generator=g)[: 2 * num_pairs * union] * 256 + 1
    high_e, high_t, nxt = _pairs_with_jaccard(num_pairs, union, 16, pool, 0)  # J = 16 / 20 = 0.8
    low_e, low_t, _ = _pairs_with_jaccard(num_pairs, union, 2, pool, nxt)  # J = 2 / 20 = 0.1
    n = 2 * num_pairs
    results = {}
    for name, ents, toks in (("high", high_e, high_t), ("low", low_e, low_t)):
        module = LMAEmbeddingBagCollection(
            [
                LMAEmbeddingBagConfig(
                    name="t", num_embeddings=n, embedding_dim=64, chunk_size=4, feature_names=["f"], memory_rows=4096
                )
            ]
        )
        builder = SignatureBuilder(n, 8)
        builder.update(torch.cat(ents), torch.cat(toks))
        assert builder.coverage() == 1.0
        module.set_signatures("t", builder.signatures())
        keys = builder.keys()
        per_pair = (keys[0::2] == keys[1::2]).float().mean(dim=1)  # fraction of the 16 keys that match
        # the 16 keys are 16 MinHashes, not one repeated: the per-pair match fraction varies like a mean of 16 draws
        p = float(per_pair.mean())
        assert float(per_pair.var()) < 3 * p * (1 - p) / 16
        loc = module.locations("t", torch.arange(n))
        shared = (loc[0::2] == loc[1::2]).float().mean(dim=1)  # per pair: fraction of the 16 chunks shared
        assert int((loc[0::2] == loc[1::2]).all(dim=1).sum()) < num_pairs // 10  # few pairs share every chunk
        results[name] = (p, float(shared.mean()))
    (key_high, loc_high), (key_low, loc_low) = results["high"], results["low"]
    # a key matches with probability J + (1 - J) / 15
    assert key_high == pytest.approx(0.8 + 0.2 / 15, abs=0.06)
    assert key_low == pytest.approx(0.1 + 0.9 / 15, abs=0.06)
    # keys_per_chunk = 5 (default for 4096 rows): a chunk is shared with probability ~ p**5 (0.36 vs 1e-4)
    assert loc_high > 0.2
    assert loc_low < 0.05
    assert loc_high > loc_low + 0.2


def test_fallback_locations_differ_between_tables_sharing_memory() -> None:
    tables = [
        LMAEmbeddingBagConfig(
            name=name,
            num_embeddings=500,
            embedding_dim=16,
            chunk_size=4,
            feature_names=[f"f_{name}"],
            memory_rows=1000,
            memory_group="shared",
        )
        for name in ("a", "b")
    ]
    module = LMAEmbeddingBagCollection(tables)
    assert module.memory_rows("shared") == 2000
    ids = torch.arange(500)
    loc_a, loc_b = module.locations("a", ids), module.locations("b", ids)
    for loc in (loc_a, loc_b):
        assert int(loc.min()) >= 0 and int(loc.max()) < 2000
        # spread like a hash: few duplicates within one chunk column, chunks of one id mostly differ
        assert all(loc[:, k].unique().numel() > 400 for k in range(4))
        assert float((loc[:, 0] == loc[:, 1]).float().mean()) < 0.05
    assert float((loc_a == loc_b).float().mean()) < 0.05
    torch.testing.assert_close(module.locations("a", ids), loc_a, rtol=0, atol=0)  # deterministic


@pytest.mark.parametrize("rows", [1024, 1000])
def test_fallback_chunks_collide_independently(rows: int) -> None:
    """Ids that collide in one chunk rarely collide in another (also for a power-of-two memory)."""
    n = 2000
    no_signatures = pack_keys(torch.full((n, 8), MISSING_KEY))
    loc = chunk_locations(torch.arange(n), no_signatures, chunk_key_selection(4, 8, 3), rows, 0)
    same = [loc[:, None, k] == loc[None, :, k] for k in range(4)]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    pairs = same[0] & off_diagonal
    assert int(pairs.sum()) > 1000  # about n**2 / rows colliding pairs in chunk 0
    for k in (1, 2, 3):
        assert float((pairs & same[k]).sum()) / float(pairs.sum()) < 0.02  # independent: ~ 1 / rows


def test_identical_minimisers_are_rare_across_keys() -> None:
    """For one entity, the token attaining the minimum differs between keys (the 2S hash functions differ)."""
    tokens = torch.arange(40, dtype=torch.int64) * 256 + 1  # small, consecutive values: the hard case
    salts = torch.tensor([_minhash_salt(j) for j in range(16)])
    argmin = mix(tokens.unsqueeze(1), salt=salts.unsqueeze(0)).argmin(dim=0)
    assert argmin.unique().numel() >= 8
    rows: Rows = {"item": [[0]] * 40, "user": [[u] for u in range(40)]}
    keys = build_signatures([_kjt(rows)], [("t", 1, ["item"], ["user"])], [8])[0].keys()
    assert keys[0].unique().numel() >= 6  # 16 keys of one entity spread over the 15 values


def test_unseen_ids_fall_back_after_fit() -> None:
    """Ids without a signature keep their hashed locations when other ids get signatures."""
    rows: Rows = {"item": [[0], [1], [0, 1]], "user": [[3], [4], [5]]}
    module = _lma(10, chunk_size=4)
    before = module.locations("items", torch.arange(10))
    module.fit_signatures([_kjt(rows)])
    after = module.locations("items", torch.arange(10))
    torch.testing.assert_close(after[2:], before[2:], rtol=0, atol=0)
    assert not torch.equal(after[:2], before[:2])


def test_chunk_locations_function_direct() -> None:
    """The free function with hand-made signatures: equal signatures -> equal rows, in range."""
    keys = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [15] * 8])
    sel = chunk_key_selection(3, 8, 4)
    loc = chunk_locations(torch.tensor([0, 1, 2]), pack_keys(keys), sel, 101, 0)
    assert loc.shape == (3, 3)
    assert loc[0].tolist() == loc[1].tolist()
    assert loc[0].tolist() == [_reference_location(keys[0].tolist(), sel, k, 101) for k in range(3)]
    assert int(loc.max()) < 101
