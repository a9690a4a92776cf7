# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Semantic LMA allocation (``torchrec_memcom.lsh``) against brute-force references and statistical properties.

References are plain Python over sets, lists and Python ints: a context token of value ``u`` of the ``c``-th context
feature in a row with label code ``l`` is ``u << 10 | l << 8 | c``; the embedding is a dense exact SVD of the
degree-normalised incidence matrix; the tree is a recursive median split; codes are packed bit by bit into Python
ints; a location follows the formula of the module docstring with ``h_k`` recomputed from ``hashing.mix`` (the only
code shared with the implementation under test).
"""

import random
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_memcom import LMAEmbeddingBagCollection, LMAEmbeddingBagConfig, lsh
from torchrec_memcom.hashing import mix
from torchrec_memcom.lsh import (
    SignatureBuilder,
    balanced_tree_codes,
    build_signatures,
    chunk_locations,
    co_occurrence_pairs,
    code_bits,
    pack_codes,
    sparse_svd_lowrank,
    spectral_embedding,
    unpack_codes,
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


def _contexts(
    rows: Rows, features: Sequence[str], context: Sequence[str], labels: Optional[List[float]] = None
) -> Dict[int, Set[int]]:
    """Brute force: entity -> set of tokens of the context values in the same rows."""
    out: Dict[int, Set[int]] = {}
    for r in range(len(rows[features[0]])):
        lab = 0 if labels is None else 1 + int(labels[r] > 0.5)
        for f in features:
            for v in rows[f][r]:
                s = out.setdefault(v, set())
                for ci, c in enumerate(context):
                    s.update(u << 10 | lab << 8 | ci for u in rows[c][r])
    return out


def _reference_embedding(contexts: Dict[int, Set[int]], rank: int) -> Tuple[List[int], torch.Tensor]:
    """Exact dense SVD of the degree-normalised incidence matrix; same sign and norm conventions as documented."""
    seen = sorted(v for v, s in contexts.items() if s)
    tokens = sorted(set().union(*(contexts[v] for v in seen)))
    col = {t: j for j, t in enumerate(tokens)}
    a = torch.zeros(len(seen), len(tokens), dtype=torch.float64)
    for i, v in enumerate(seen):
        for t in contexts[v]:
            a[i, col[t]] = 1.0
    a = a / a.sum(1, keepdim=True).sqrt() / a.sum(0, keepdim=True).sqrt()
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    r = min(rank, min(a.shape) - 1)
    x = u[:, 1 : r + 1] * s[1 : r + 1]
    for j in range(r):
        if x[int(x[:, j].abs().argmax()), j] < 0:
            x[:, j] = -x[:, j]
    return seen, x / x.norm(dim=1, keepdim=True)


def _reference_tree(x: torch.Tensor, depth: int) -> List[int]:
    """Recursive balanced PCA split: lower half (by projection, then row) -> child 2c, the rest -> 2c + 1."""
    leaves = [0] * x.shape[0]

    def split(rows: List[int], level: int, code: int) -> None:
        if level == depth:
            for i in rows:
                leaves[i] = code
            return
        sub = x[rows]
        centred = sub - sub.mean(0)
        direction = torch.linalg.eigh(centred.t() @ centred).eigenvectors[:, -1]
        if direction[int(direction.abs().argmax())] < 0:
            direction = -direction
        proj = (sub @ direction).tolist()
        order = sorted(range(len(rows)), key=lambda j: (proj[j], rows[j]))
        lower = [rows[j] for j in order[: (len(rows) + 1) // 2]]
        upper = [rows[j] for j in order[(len(rows) + 1) // 2 :]]
        split(lower, level + 1, 2 * code)
        split(upper, level + 1, 2 * code + 1)

    split(list(range(x.shape[0])), 0, 0)
    return leaves


def _reference_codes(contexts: Dict[int, Set[int]], n: int, chunks: int, bits: int, rank: int) -> torch.Tensor:
    """Codes of ids with equal context sets come from one tree point (their smallest id)."""
    q = (1 << bits) - 1
    codes = torch.full((n, chunks), q, dtype=torch.int64)
    seen, x = _reference_embedding(contexts, max(rank, 4 * chunks))
    groups = max(1, min(chunks, x.shape[1] // 4))
    assert chunks <= groups, "the reference covers chunks with their own components only"
    first_of: Dict[frozenset, int] = {}
    for i, v in enumerate(seen):
        first_of.setdefault(frozenset(contexts[v]), i)
    points = sorted(set(first_of.values()))
    for k in range(chunks):
        leaves = _reference_tree(x[points][:, k::groups], bits)
        leaf_of = {i: leaf for i, leaf in zip(points, leaves)}
        for v in seen:
            codes[v, k] = leaf_of[first_of[frozenset(contexts[v])]] * q >> bits
    return codes


def _reference_pack(codes: Sequence[int], bits: int, num_bytes: int) -> List[int]:
    word = sum(c << (k * bits) for k, c in enumerate(codes))
    word |= ((1 << (8 * num_bytes)) - 1) & ~((1 << (len(codes) * bits)) - 1)  # padding bits are 1
    return [(word >> (8 * b)) & 0xFF for b in range(num_bytes)]


def _reference_hash(i: int, k: int, table_salt: int) -> int:
    y = int(mix(torch.tensor([(i << 10) | (table_salt & 0x3FF)]), salt=int(mix(torch.tensor(k + 4096))))[0])
    y = int(mix(torch.tensor([y ^ (y >> 15)]), salt=int(mix(torch.tensor(k + 8192))))[0])
    return y ^ (y >> 13)


def _reference_location(
    i: int, k: int, code: int, chunks: int, bits: int, memory: int, offset: int, rows: int, salt: int
) -> int:
    p = rows // chunks + (1 if k < rows % chunks else 0)
    base = offset + k * (rows // chunks) + min(k, rows % chunks)
    h = _reference_hash(i, k, salt)
    q = (1 << bits) - 1
    if bits == 0 or code == q:
        return h % memory
    start = code * p // q
    return base + start + h % max(1, (code + 1) * p // q - start)


# ----------------------------------------------------------------------------------------------------------------
# codes <-> bytes


@pytest.mark.parametrize("chunks,bits,num_bytes", [(4, 8, 4), (4, 6, 3), (3, 5, 2), (16, 2, 4), (2, 16, 4), (5, 7, 6)])
def test_pack_unpack_match_bitwise_reference(chunks: int, bits: int, num_bytes: int) -> None:
    g = torch.Generator().manual_seed(chunks * 100 + bits)
    codes = torch.randint(0, 1 << bits, (29, chunks), generator=g)
    packed = pack_codes(codes, bits, num_bytes)
    assert packed.dtype == torch.uint8 and packed.shape == (29, num_bytes)
    expected = [_reference_pack(row, bits, num_bytes) for row in codes.tolist()]
    assert packed.tolist() == expected
    torch.testing.assert_close(unpack_codes(packed, chunks, bits), codes, rtol=0, atol=0)


def test_all_ones_bytes_mean_no_signature() -> None:
    empty = torch.full((3, 3), 0xFF, dtype=torch.uint8)
    assert bool((unpack_codes(empty, 4, 6) == 63).all())
    with pytest.raises(ValueError, match="do not fit"):
        pack_codes(torch.zeros(2, 4, dtype=torch.int64), 8, 3)


def test_code_bits() -> None:
    assert [code_bits(s, 4) for s in (0, 1, 2, 3, 4, 8, 9)] == [0, 2, 4, 6, 8, 16, 16]
    assert code_bits(4, 16) == 2 and code_bits(3, 5) == 4


# ----------------------------------------------------------------------------------------------------------------
# co-occurrence


def test_co_occurrence_pairs_brute_force() -> None:
    rng = random.Random(1)
    rows = _random_rows(rng, 40, {"item": (30, 0, 3), "user": (50, 0, 2), "genre": (8, 0, 4)})
    rows["item"][0], rows["genre"][1], rows["user"][2] = [], [], []  # explicit empty bags
    labels = [rng.random() for _ in range(40)]
    fd = _kjt(rows).to_dict()
    for lab in (None, labels):
        ent, tok = co_occurrence_pairs(fd, ["item"], ["user", "genre"], None if lab is None else torch.tensor(lab))
        assert ent.dtype == torch.int64 and tok.dtype == torch.int64
        want = sorted(
            (v, u << 10 | (0 if lab is None else 1 + int(lab[r] > 0.5)) << 8 | ci)
            for r in range(40)
            for v in rows["item"][r]
            for ci, c in enumerate(["user", "genre"])
            for u in rows[c][r]
        )
        assert sorted(zip(ent.tolist(), tok.tolist())) == want and len(want) > 0


def test_co_occurrence_pairs_several_entity_features_and_empty() -> None:
    rng = random.Random(2)
    rows = _random_rows(rng, 25, {"a": (20, 0, 2), "b": (20, 1, 3), "ctx": (9, 0, 3)})
    ent, tok = co_occurrence_pairs(_kjt(rows).to_dict(), ["a", "b"], ["ctx"])
    want = sorted((v, u << 10) for r in range(25) for f in ("a", "b") for v in rows[f][r] for u in rows["ctx"][r])
    assert sorted(zip(ent.tolist(), tok.tolist())) == want
    ent, tok = co_occurrence_pairs(_kjt({"item": [[], []], "user": [[1], []]}).to_dict(), ["item"], ["user"])
    assert ent.numel() == 0 and tok.numel() == 0


# ----------------------------------------------------------------------------------------------------------------
# fitting: brute-force references on tiny examples


def _tiny_contexts(seed: int, n: int = 24, tokens: int = 40) -> Dict[int, Set[int]]:
    rng = random.Random(seed)
    return {v: {t << 10 for t in rng.sample(range(tokens), rng.randint(4, 12))} for v in range(n)}


def _pairs_of(contexts: Dict[int, Set[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    ent = torch.tensor([v for v, s in contexts.items() for _ in s], dtype=torch.int64)
    tok = torch.tensor([t for s in contexts.values() for t in s], dtype=torch.int64)
    return ent, tok


def test_spectral_embedding_matches_dense_svd() -> None:
    contexts = _tiny_contexts(3)
    contexts[5] = set()  # never seen: not in the output
    contexts[9] = set(contexts[2])  # equal contexts share a context index
    ent, tok = _pairs_of(contexts)
    # duplicated pairs are one set element
    seen, x, context = spectral_embedding(torch.cat([ent, ent[:30]]), torch.cat([tok, tok[:30]]), rank=8)
    ref_seen, ref = _reference_embedding(contexts, 8)
    assert seen.tolist() == ref_seen and x.dtype == torch.float64 and x.shape == (23, 8)
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-9)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(23, dtype=torch.float64))
    same = [[contexts[a] == contexts[b] for b in ref_seen] for a in ref_seen]
    assert (context.unsqueeze(0) == context.unsqueeze(1)).tolist() == same
    assert int(context.max()) + 1 == 22


def test_spectral_embedding_randomized_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the dense-size threshold the seeded randomized SVD runs; its top components match the exact ones."""
    ent, tok, _ = _planted(2, clusters=6, per_cluster=50, pool=40, sample=15)
    _, exact, _ = spectral_embedding(ent, tok, rank=5)
    monkeypatch.setattr(lsh, "_DENSE_SVD_ENTRIES", 0)
    _, approx, _ = spectral_embedding(ent, tok, rank=5)
    _, again, _ = spectral_embedding(ent, tok, rank=5)
    # the 5 cluster components have close singular values: compare the geometry (cosines), not the basis
    torch.testing.assert_close(approx @ approx.t(), exact @ exact.t(), rtol=0, atol=1e-4)
    torch.testing.assert_close(approx, again, rtol=0, atol=0)  # seeded: bit-identical


@pytest.mark.parametrize("shape", [(300, 120), (90, 400)])
def test_sparse_svd_lowrank_is_torchs(shape: Tuple[int, int]) -> None:
    """The CSR randomized SVD gives ``torch.svd_lowrank``'s ``U`` and ``S`` (same seed) on tall and wide inputs."""
    g = torch.Generator().manual_seed(shape[0])
    dense = torch.rand(shape, generator=g, dtype=torch.float64) * (torch.rand(shape, generator=g) < 0.05)
    a = dense.to_sparse().coalesce()
    torch.manual_seed(3)
    u, s = sparse_svd_lowrank(a, q=12, niter=4)
    torch.manual_seed(3)
    ref_u, ref_s, _ = torch.svd_lowrank(a, q=12, niter=4)
    torch.testing.assert_close(s, ref_s, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(u.abs(), ref_u.abs(), rtol=0, atol=1e-9)  # (signs: per column, as the SVD's)


def test_spectral_embedding_degenerate_inputs() -> None:
    seen, x, context = spectral_embedding(torch.tensor([3, 3]), torch.tensor([7, 9]), rank=8)  # one entity
    assert seen.tolist() == [3] and x.shape == (1, 0) and context.tolist() == [0]
    seen, x, _ = spectral_embedding(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), rank=8)
    assert seen.numel() == 0 and x.shape == (0, 0)


@pytest.mark.parametrize("n,depth", [(64, 3), (37, 4), (5, 4)])
def test_balanced_tree_matches_recursive_reference(n: int, depth: int) -> None:
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    leaves = balanced_tree_codes(x, depth)
    assert leaves.tolist() == _reference_tree(x, depth)
    sizes = torch.bincount(leaves, minlength=1 << depth)
    assert int(sizes.max()) - int(sizes.min()) <= 1  # balanced: floor or ceil of n / 2**depth


def test_balanced_tree_random_directions_are_seeded_and_balanced() -> None:
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = balanced_tree_codes(x, 3, torch.Generator().manual_seed(5))
    b = balanced_tree_codes(x, 3, torch.Generator().manual_seed(5))
    assert a.tolist() == b.tolist() and a.tolist() != balanced_tree_codes(x, 3).tolist()
    sizes = torch.bincount(a, minlength=8)
    assert int(sizes.sum()) == 100 and int(sizes.min()) == 12 and int(sizes.max()) == 13


@pytest.mark.parametrize("chunks,signature_bytes", [(2, 1), (4, 2), (4, 3)])
def test_signatures_match_brute_force_pipeline(chunks: int, signature_bytes: int) -> None:
    """Rows -> contexts -> dense SVD -> recursive trees -> codes -> bytes, all by brute force, on a tiny table."""
    rng = random.Random(4)
    n = 40
    rows = _random_rows(rng, 120, {"item": (n, 1, 2), "user": (30, 1, 3), "genre": (6, 0, 2)}, never={"item": 36})
    labels = [float(rng.random() < 0.5) for _ in range(120)]
    builder = SignatureBuilder(n, chunks, signature_bytes, rank=8)
    build_signatures([(_kjt(rows), torch.tensor(labels))], [("t", n, ["item"], ["user", "genre"], True)], [builder])
    bits = code_bits(signature_bytes, chunks)
    ref = _reference_codes(_contexts(rows, ["item"], ["user", "genre"], labels), n, chunks, bits, 8)
    torch.testing.assert_close(builder.codes(), ref, rtol=0, atol=0)
    assert builder.signatures().tolist() == [_reference_pack(r, bits, signature_bytes) for r in ref.tolist()]
    assert bool((builder.codes()[36:] == (1 << bits) - 1).all())  # never seen: no signature
    assert builder.coverage() == pytest.approx(36 / 40)


def test_default_context_is_every_other_feature_and_labels_optional() -> None:
    rng = random.Random(5)
    rows = _random_rows(rng, 60, {"user": (40, 1, 1), "item": (25, 1, 2), "genre": (6, 0, 3)})
    builder = SignatureBuilder(25, 4, 2, rank=8)
    build_signatures([_kjt(rows)], [("t", 25, ["item"], None, True)], [builder])  # no labels in the batches
    ref = _reference_codes(_contexts(rows, ["item"], ["user", "genre"]), 25, 4, 4, 8)  # KJT order, minus "item"
    torch.testing.assert_close(builder.codes(), ref, rtol=0, atol=0)


def test_entity_with_empty_context_has_no_signature() -> None:
    rows: Rows = {"item": [[1], [2], [1], [3], [0]], "user": [[], [5], [], [6], [5]]}
    builder = SignatureBuilder(5, 2, 1)
    build_signatures([_kjt(rows)], [("t", 5, ["item"], ["user"], False)], [builder])
    missing = (1 << 4) - 1
    assert builder.codes()[1].tolist() == [missing, missing]  # item 1 only ever seen without users
    assert builder.codes()[4].tolist() == [missing, missing]  # never seen
    assert builder.coverage() == pytest.approx(3 / 5)
    assert SignatureBuilder(10, 4, 4).coverage() == 0.0 and SignatureBuilder(10, 4, 0).coverage() == 0.0


# ----------------------------------------------------------------------------------------------------------------
# fitting: statistical behaviour


def _planted(
    seed: int, clusters: int, per_cluster: int, pool: int, sample: int, background: int = 4
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entity ``e`` of cluster ``e // per_cluster`` draws ``sample`` tokens from its cluster's pool of ``pool`` and
    ``background`` from a shared pool of 100 (which keeps the co-occurrence graph connected)."""
    g = torch.Generator().manual_seed(seed)
    n = clusters * per_cluster
    cluster = torch.arange(n) // per_cluster
    picks = torch.stack([torch.randperm(pool, generator=g)[:sample] for _ in range(n)])
    shared = torch.stack([torch.randperm(100, generator=g)[:background] for _ in range(n)])
    tokens = torch.cat([cluster.unsqueeze(1) * pool + picks, clusters * pool + shared], dim=1) << 10
    return torch.arange(n).repeat_interleave(sample + background), tokens.reshape(-1), cluster


def test_planted_clusters_get_their_own_codes() -> None:
    """16 clusters of 32 ids (in-cluster Jaccard ~0.2, across ~0), 15 codes per chunk: codes follow the clusters."""
    ent, tok, cluster = _planted(0, clusters=16, per_cluster=32, pool=60, sample=20)
    builder = SignatureBuilder(512, 4, 2)  # 4-bit codes
    builder.update(ent, tok)
    codes = builder.codes()
    same = cluster.unsqueeze(0) == cluster.unsqueeze(1)
    off_diag = ~torch.eye(512, dtype=torch.bool)
    for k in range(4):
        equal = codes[:, k].unsqueeze(0) == codes[:, k].unsqueeze(1)
        within = float(equal[same & off_diag].float().mean())
        across = float(equal[~same].float().mean())
        # perfect: 1 within; across only where the tree's 16 leaves fold onto 15 codes (2 clusters: 2/240 pairs).
        # A chunk sees a quarter of the spectrum, so a few ids land in a neighbouring cluster's cell.
        assert within > 0.5 and across < 0.04, (k, within, across)  # chance: 1 / 15 for both


def test_similar_contexts_share_more_chunks() -> None:
    """Pairs with Jaccard 0.8 share a chunk's code far more often than pairs with Jaccard 0.1 (which share at about
    the chance rate of 1 / codes), and ids with identical contexts share every chunk."""
    ent, tok, cluster = _planted(1, clusters=32, per_cluster=16, pool=80, sample=24)
    n = 512
    g = torch.Generator().manual_seed(7)
    bases = torch.randperm(n, generator=g)[:120]
    extra_e, extra_t = [ent], [tok]
    own = {i: tok[ent == i] for i in range(n)}
    for j, b in enumerate(bases.tolist()):
        s = own[b]
        keep = 24 * 8 // 9  # |A n B| / |A u B| = 21.3 / 26.7 = 0.8 for 21 of 24 kept plus 3 fresh tokens
        near = torch.cat([s[:keep], ((10_000 + 3 * j + torch.arange(24 - keep)) << 10)])
        other = own[int(bases[(j + 1) % 120])]  # an unrelated entity; keep 4 of b's tokens: J = 4 / 44 ~ 0.1
        far = torch.cat([s[:4], other[4:]])
        twin = s.clone()
        for offset, t in ((n, near), (n + 120, far), (n + 240, twin)):
            extra_e.append(torch.full((t.numel(),), offset + j))
            extra_t.append(t)
    builder = SignatureBuilder(n + 360, 8, 4, rank=32)  # 8 chunks of 4-bit codes
    builder.update(torch.cat(extra_e), torch.cat(extra_t))
    codes = builder.codes()
    base_codes = codes[bases]

    def shared(lo: int) -> float:
        return float((codes[lo : lo + 120] == base_codes).float().mean())

    high, low, identical = shared(n), shared(n + 120), shared(n + 240)
    assert identical == 1.0
    assert high > 0.6, high
    assert low < 3 / 15, low  # 15 codes per chunk: chance 1/15; a shared quarter of the context adds little
    assert high > low + 0.45


def test_label_context_separates_liked_from_disliked() -> None:
    """Two groups of items rated by the same users, one liked, one disliked: only the labels tell them apart."""
    rng = random.Random(8)
    rows: Rows = {"item": [], "user": []}
    labels: List[float] = []
    for _ in range(3000):
        item, user = rng.randrange(64), rng.randrange(50)
        rows["item"].append([item])
        rows["user"].append([user])
        liked = (item < 32) == (user < 25)  # users 0-24 like items 0-31, users 25-49 like items 32-63
        labels.append(float(liked))
    group = torch.arange(64) < 32

    def agreement(use_labels: bool) -> float:
        builder = SignatureBuilder(64, 4, 1)  # 2-bit codes: 3 codes per chunk
        build_signatures([(_kjt(rows), torch.tensor(labels))], [("t", 64, ["item"], ["user"], use_labels)], [builder])
        c = builder.codes()[:, 0]
        # fraction of cross-group pairs with equal codes
        return float((c[group].unsqueeze(1) == c[~group].unsqueeze(0)).float().mean())

    assert agreement(True) < 0.05  # the groups never share a code
    assert agreement(False) > 0.15  # without labels both groups have the same audience


def test_fit_is_deterministic_and_independent_of_batching_and_row_order() -> None:
    rng = random.Random(9)
    rows = _random_rows(rng, 90, {"item": (50, 1, 2), "user": (60, 1, 3)})
    labels = torch.tensor([float(rng.random() < 0.5) for _ in range(90)])

    def fit(order: List[int], batch: int) -> torch.Tensor:
        b = SignatureBuilder(50, 4, 3, dedup_every=17)  # frequent de-duplication must not matter either
        parts = [order[lo : lo + batch] for lo in range(0, 90, batch)]
        batches = [(_kjt({f: [rows[f][r] for r in p] for f in rows}), labels[p]) for p in parts]
        build_signatures(batches, [("t", 50, ["item"], ["user"], True)], [b])
        return b.signatures()

    reference = fit(list(range(90)), 90)
    shuffled = list(range(90))
    random.Random(1).shuffle(shuffled)
    for order, batch in ((list(range(90)), 90), (list(range(90)), 7), (shuffled, 13)):
        torch.testing.assert_close(fit(order, batch), reference, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# chunk locations


def test_chunk_locations_match_reference() -> None:
    g = torch.Generator().manual_seed(10)
    n, chunks, bits, memory, rows, offset, salt = 60, 4, 6, 1500, 203, 1000, 3
    codes = torch.randint(0, (1 << bits) - 1, (n, chunks), generator=g)
    codes[::5] = (1 << bits) - 1  # no signature
    codes[1, 2] = (1 << bits) - 2  # the last code's block ends at the slice end
    sig = pack_codes(codes, bits, 3)
    ids = torch.randint(0, n, (80,), generator=g)
    loc = chunk_locations(ids, sig, chunks, bits, memory, offset, rows, salt)
    assert loc.shape == (80, chunks) and loc.dtype == torch.int64
    for i, row in zip(ids.tolist(), loc.tolist()):
        assert row == [
            _reference_location(i, k, int(codes[i, k]), chunks, bits, memory, offset, rows, salt) for k in range(chunks)
        ]
    # without code bits every id is hashed, whatever the bytes say
    no_bits = chunk_locations(ids, sig[:, :0], chunks, 0, memory, offset, rows, salt)
    assert no_bits.tolist() == [
        [_reference_location(i, k, 0, chunks, 0, memory, offset, rows, salt) for k in range(chunks)]
        for i in ids.tolist()
    ]


@pytest.mark.parametrize("bits,rows", [(8, 4 * 300 + 3), (4, 4 * 10 + 1)])
def test_locations_span_every_row_and_codes_own_blocks(bits: int, rows: int) -> None:
    """Fitted-like codes fill every row of every chunk slice; rows of different codes never mix when codes <= rows."""
    n, chunks = 6000, 4
    g = torch.Generator().manual_seed(11)
    codes = torch.randint(0, (1 << bits) - 1, (n, chunks), generator=g)
    loc = chunk_locations(torch.arange(n), pack_codes(codes, bits, 4), chunks, bits, 10**6, 50, rows, 0)
    assert sorted(set(loc.flatten().tolist())) == list(range(50, 50 + rows))
    slice_of = [
        next(k for k in range(chunks) if r < 50 + (k + 1) * (rows // chunks) + min(k + 1, rows % chunks))
        for r in loc[:, 0].tolist()[:5]
    ]
    assert slice_of == [0] * 5
    for k in range(chunks):
        assert bool((loc[:, k] >= 50 + k * (rows // chunks) + min(k, rows % chunks)).all())
        codes_per_row: Dict[int, Set[int]] = {}
        for r, c in zip(loc[:, k].tolist(), codes[:, k].tolist()):
            codes_per_row.setdefault(r, set()).add(c)
        widest = max(len(s) for s in codes_per_row.values())
        # 2**bits - 1 codes on P rows: one code per row when codes <= P, else at most ceil(codes / P) + 1 neighbours
        p = rows // chunks
        assert widest <= (1 if (1 << bits) - 1 <= p else -(-((1 << bits) - 1) // p) + 1)


def test_unseen_ids_spread_uniformly() -> None:
    """Ids without a signature: chi-square of each chunk's row counts over the whole memory against uniform."""
    n, chunks, memory = 40_000, 4, 397
    sig = torch.full((n, 2), 0xFF, dtype=torch.uint8)
    loc = chunk_locations(torch.arange(n), sig, chunks, 4, memory, 100, 4 * 50, 1)  # the table owns rows 100-299
    for k in range(chunks):
        counts = torch.bincount(loc[:, k], minlength=memory).to(torch.float64)
        assert int(counts.numel()) == memory
        expected = n / memory
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        df = memory - 1
        assert chi2 < df + 6 * (2 * df) ** 0.5, (k, chi2)  # mean df, sd sqrt(2 df)


@pytest.mark.parametrize("rows", [1024, 1000])
def test_hashed_chunks_collide_independently(rows: int) -> None:
    """Ids that collide in one chunk rarely collide in another (also for a power-of-two slice)."""
    n = 2000
    loc = chunk_locations(torch.arange(n), torch.zeros(n, 0, dtype=torch.uint8), 4, 0, rows, 0, rows, 0)
    same = [loc[:, None, k] == loc[None, :, k] for k in range(4)]
    pairs = same[0] & ~torch.eye(n, dtype=torch.bool)
    assert int(pairs.sum()) > 1000  # about n**2 / rows colliding pairs in chunk 0
    for k in (1, 2, 3):
        assert float((pairs & same[k]).sum()) / float(pairs.sum()) < 0.02  # independent: ~ 1 / rows


def test_locations_do_not_depend_on_batch_composition() -> None:
    """Per-id and stateless: the rows of an id are the same alone, in any batch, or split over ranks."""
    g = torch.Generator().manual_seed(12)
    codes = torch.randint(0, 255, (300, 4), generator=g)
    sig = pack_codes(codes, 8, 4)
    ids = torch.randint(0, 300, (500,), generator=g)
    whole = chunk_locations(ids, sig, 4, 8, 2000, 7, 999, 2)
    parts = torch.cat([chunk_locations(ids[r::3], sig, 4, 8, 2000, 7, 999, 2) for r in range(3)])
    order = torch.cat([torch.arange(500)[r::3] for r in range(3)])
    torch.testing.assert_close(parts, whole[order], rtol=0, atol=0)
    torch.testing.assert_close(chunk_locations(ids[:1], sig, 4, 8, 2000, 7, 999, 2), whole[:1], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# the module: fit_signatures, groups, fallbacks


def _lma(n: int, **kw) -> LMAEmbeddingBagCollection:
    t = LMAEmbeddingBagConfig(
        name="items", num_embeddings=n, embedding_dim=16, feature_names=["item"], memory_rows=97, **kw
    )
    return LMAEmbeddingBagCollection([t])


def test_fit_signatures_max_rows_over_batches_and_labels() -> None:
    rng = random.Random(13)
    n = 40
    rows = _random_rows(rng, 400, {"item": (n, 1, 2), "user": (30, 1, 2)}, never={"item": 36})
    rows["item"][350] = [38]  # only after max_rows: no signature
    labels = torch.tensor([float(rng.random() < 0.5) for _ in range(400)])
    batches = [(_kjt({f: rows[f][lo : lo + 30] for f in rows}), labels[lo : lo + 30]) for lo in range(0, 400, 30)]
    # rank 8 (16 used for 4 chunks) of a connected co-occurrence graph: SVD rounding cannot rotate the basis
    module = _lma(n, chunk_size=4, signature_bytes=2, signature_rank=8)
    coverage = module.fit_signatures(batches, max_rows=250)
    first = {f: rows[f][:250] for f in rows}
    contexts = _contexts(first, ["item"], ["user"], labels[:250].tolist())
    ref = _reference_codes(contexts, n, 4, 4, 8)
    torch.testing.assert_close(unpack_codes(module.table_signatures("items"), 4, 4), ref, rtol=0, atol=0)
    assert coverage == {"items": pytest.approx(36 / 40)}
    assert bool((module.table_signatures("items")[38] == 255).all())
    # without label_context the labels are ignored
    plain = _lma(n, chunk_size=4, signature_bytes=2, label_context=False, signature_rank=8)
    plain.fit_signatures(batches, max_rows=250)
    ref_plain = _reference_codes(_contexts(first, ["item"], ["user"]), n, 4, 4, 8)
    torch.testing.assert_close(unpack_codes(plain.table_signatures("items"), 4, 4), ref_plain, rtol=0, atol=0)


def test_fit_signatures_rejects_bad_input() -> None:
    module = _lma(10, chunk_size=4, context_features=["user"])
    with pytest.raises(ValueError, match="'items'.*missing"):
        module.fit_signatures([_kjt({"item": [[1]], "other": [[2]]})])
    with pytest.raises(ValueError, match=r"'items'.*\[0, 10\)"):
        module.fit_signatures([_kjt({"item": [[12]], "user": [[2]]})])


def test_identical_contexts_identical_signatures_and_locations() -> None:
    rng = random.Random(14)
    rows = _random_rows(rng, 200, {"item": (50, 1, 2), "user": (60, 1, 3)}, never={"item": 40})
    for r in range(0, 200, 3):  # items 41 and 43 always appear together, so their contexts are identical
        rows["item"][r] = rows["item"][r] + [41, 43]
    module = _lma(50, chunk_size=4, signature_bytes=4)
    module.fit_signatures([_kjt(rows)])
    sig = module.table_signatures("items")
    torch.testing.assert_close(sig[41], sig[43], rtol=0, atol=0)
    assert bool((sig[41] != 255).any())
    loc = module.locations("items", torch.tensor([41, 43]))
    # same code in every chunk, hence the same block: P = 24 rows per chunk < 255 codes, so one row per block
    torch.testing.assert_close(loc[0], loc[1], rtol=0, atol=0)


def test_tables_of_a_group_own_disjoint_rows_and_unseen_ids_keep_hashed_rows() -> None:
    tables = [
        LMAEmbeddingBagConfig(
            name=name,
            num_embeddings=500,
            embedding_dim=16,
            chunk_size=4,
            feature_names=[f"f_{name}"],
            memory_rows=rows,
            memory_group="shared",
        )
        for name, rows in (("a", 1000), ("b", 601))
    ]
    module = LMAEmbeddingBagCollection(tables)
    assert module.memory_rows("shared") == 1601
    ids = torch.arange(500)
    loc_a, loc_b = module.locations("a", ids), module.locations("b", ids)
    for loc in (loc_a, loc_b):  # no signatures yet: hashed over the whole shared memory
        # 2000 slots on 1601 rows reach 1601 * (1 - exp(-2000 / 1601)) = 1141 distinct rows on average
        assert int(loc.min()) >= 0 and int(loc.max()) < 1601 and loc.unique().numel() > 1050
    assert float((loc_a == loc_b).float().mean()) < 0.01  # the tables hash differently
    rng = random.Random(15)
    rows: Rows = {"f_a": [[rng.randrange(250)] for _ in range(400)], "f_b": [[rng.randrange(500)] for _ in range(400)]}
    coverage = module.fit_signatures([_kjt(rows)])
    assert 0.3 < coverage["a"] < 0.55 and coverage["b"] > 0.5
    after_a, after_b = module.locations("a", ids), module.locations("b", ids)
    unseen_a = (module.table_signatures("a") == 255).all(dim=1)
    unseen_b = (module.table_signatures("b") == 255).all(dim=1)
    torch.testing.assert_close(after_a[unseen_a], loc_a[unseen_a], rtol=0, atol=0)
    assert int(after_a[~unseen_a].max()) < 1000  # signed ids of "a" stay on its own rows ...
    assert int(after_b[~unseen_b].min()) >= 1000  # ... and those of "b" on its rows
    assert not torch.equal(after_a[~unseen_a], loc_a[~unseen_a])
