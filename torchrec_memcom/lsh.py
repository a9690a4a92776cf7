# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Semantic LMA allocation: compact per-chunk codes fitted from co-occurrence, and chunk locations computed from them.

**Locations** (the hot path, ``chunk_locations``; pure int64 tensor ops below 2**62, so a GPU port is bit-exact).
Tables may share one memory of ``M`` rows; a table owns ``R`` of them from ``row_offset`` on, cut into ``C = d / Z``
consecutive slices, one per chunk, of ``P = P_k = R // C`` or ``R // C + 1`` rows (the first ``R mod C`` slices take
one more). Every id ``v`` stores one ``b``-bit code per chunk, ``code_k(v)`` in ``[0, Q)`` with ``Q = 2**b - 1``; the
all-ones value ``Q`` means "no signature". Code ``c`` owns the block of rows ``[c * P // Q, (c + 1) * P // Q)`` of
chunk ``k``'s slice, and the id's own hash ``h_k(v)`` picks the row inside; an id without a signature is hashed over
the whole memory, as in the hashing trick (chunk-wise) and the authors' shared-memory LMA::

    loc_k(v) = base_k + c * P // Q + h_k(v) mod max(1, (c + 1) * P // Q - c * P // Q)    (c = code_k(v) < Q)
    loc_k(v) = h_k(v) mod M                                                               (no signature)
    base_k = row_offset + k * (R // C) + min(k, R mod C)

so every co-occupant of a row of chunk ``k`` with a signature has the same code (or, when ``Q > P``, one of a few
neighbouring codes). ``h_k`` is two rounds of ``hashing.mix`` with hashed per-chunk salts and the table salt.
(Measured on ML-1M: hashing unsigned ids over the whole shared memory beats hashing them inside their table's chunk
slices by ~0.002 AUC, and semantic blocks inside per-table slices beat blocks shared by the tables by ~0.002.)

**Signatures** (``(n, S)`` uint8 per table, ``S = signature_bytes``): the ``C`` codes of ``b = min(16, 8 S // C)``
bits as one little-endian bit string, code ``k`` at bits ``[k b, (k + 1) b)``; unused trailing bits are 1. A buffer
of ``0xFF`` bytes therefore means "no id has a signature".

**Fitting** (``SignatureBuilder``, offline, CPU). The context ``S(v)`` of entity ``v`` is the set of tokens
(context feature, value, label of the row if given) of the rows ``v`` occurs in, e.g. ``(user, u, liked)`` for a
movie. Let ``A`` be the entity x token incidence matrix. The builder takes the top ``r`` non-trivial singular vectors of
``D_e^{-1/2} A D_t^{-1/2}`` (degree-normalised, as in spectral co-clustering), scaled by their singular values and
normalised per entity, so entities whose contexts overlap in the low-rank sense lie at small angles. Chunk ``k`` sees
its own disjoint slice of the ``r`` components (``j = k mod G``, ``G = min(C, r // 4)``) and cuts it with a balanced
PCA tree of depth ``b`` (split every cell at its median along the cell's principal direction; chunks beyond ``G``
reuse a slice with random directions), so each code holds the same number of entities, nearby codes are nearby
cells, and different chunks group an id with different neighbours (an id keeps a unique combination of rows).
This replaces the MinHash keys of the authors' code: on MovieLens-1M, MinHash power ``K`` that spreads ids over the
memory (``K >= 2``) leaves almost no similar pairs sharing (nearest-neighbour Jaccard ~0.15 -> ``J**2`` ~0.02), and
``K = 1`` piles hundreds of ids onto single rows (see ``docs/LMA.md``).
"""

import warnings
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_memcom.configs import MAX_CODE_BITS, code_bits
from torchrec_memcom.hashing import mix

__all__ = [
    "FALLBACK_SALT",
    "MAX_CODE_BITS",
    "SignatureBuilder",
    "balanced_tree_codes",
    "build_signatures",
    "chunk_locations",
    "co_occurrence_pairs",
    "code_bits",
    "pack_codes",
    "spectral_embedding",
    "sparse_svd_lowrank",
    "unpack_codes",
]

FALLBACK_SALT: int = 4_096
_TOKEN_FEATURE_BITS: int = 8
_TOKEN_LABEL_BITS: int = 2
_TOKEN_VALUE_MOD: int = 1 << 50
_MIN_DIMS_PER_CHUNK: int = 4
_SVD_OVERSAMPLE: int = 10
_SVD_ITERS: int = 6
_FIT_SEED: int = 20_260_521
_DENSE_SVD_ENTRIES: int = 1 << 22
_SET_SALTS: Tuple[int, int] = (1_000_003, 2_000_003)

Batch = Union[KeyedJaggedTensor, Tuple[KeyedJaggedTensor, Optional[torch.Tensor]]]


# --- codes <-> bytes ------------------------------------------------------------------------------------------------


def pack_codes(codes: torch.Tensor, bits: int, num_bytes: int) -> torch.Tensor:
    """``(n, C)`` codes in ``[0, 2**bits)`` -> ``(n, num_bytes)`` uint8, little-endian bit string, padding bits 1."""
    n, num_chunks = codes.shape
    if num_chunks * bits > 8 * num_bytes:
        raise ValueError(f"{num_chunks} codes of {bits} bits do not fit in {num_bytes} bytes")
    used = num_chunks * bits
    padding = [sum(1 << (b - 8 * j) for b in range(max(used, 8 * j), 8 * j + 8)) for j in range(num_bytes)]
    out = torch.tensor(padding, dtype=torch.int32).repeat(n, 1)
    codes = codes.to(torch.int32)
    for k in range(num_chunks):  # code k is bits [k b, (k + 1) b): at most 3 bytes, each an OR of a shifted code
        first = k * bits
        for j in range(first // 8, (first + bits - 1) // 8 + 1):
            shift = first - 8 * j
            part = codes[:, k] << shift if shift >= 0 else codes[:, k] >> -shift
            out[:, j] |= part & 0xFF
    return out.to(torch.uint8)


def unpack_codes(signatures: torch.Tensor, num_chunks: int, bits: int) -> torch.Tensor:
    """``(N, S)`` uint8 -> ``(N, C)`` int64 codes: code ``k`` is bits ``[k b, (k + 1) b)`` (at most 3 bytes each)."""
    if bits < 1 or bits > MAX_CODE_BITS:
        raise ValueError(f"code bits must be in [1, {MAX_CODE_BITS}], got {bits}")
    s = signatures.to(torch.int64)
    s = torch.cat([s, s.new_zeros(s.shape[0], 2)], dim=1)  # codes near the end read two padding bytes
    first_bit = torch.arange(num_chunks, device=s.device, dtype=torch.int64) * bits
    byte = first_bit // 8
    word = s[:, byte] | (s[:, byte + 1] << 8) | (s[:, byte + 2] << 16)
    return (word >> (first_bit % 8)) & ((1 << bits) - 1)


# --- locations ------------------------------------------------------------------------------------------------------


def _chunk_hash(ids: torch.Tensor, num_chunks: int, table_salt: int) -> torch.Tensor:
    """``(N, C)`` per-chunk hashes of the ids in ``[0, 2**31 - 1)``, independent across chunks and tables."""
    # mix is linear in its input: consecutive salts or ids would give lattice-like, chunk-correlated rows, so the
    # salts are hashed and two rounds are separated by xor-shifts.
    chunk = torch.arange(num_chunks, device=ids.device, dtype=torch.int64).unsqueeze(0)
    y = mix((ids << 10 | (table_salt & 0x3FF)).unsqueeze(1), salt=mix(chunk + FALLBACK_SALT))
    y = mix(y ^ (y >> 15), salt=mix(chunk + 2 * FALLBACK_SALT))
    return y ^ (y >> 13)


def chunk_locations(
    ids: torch.Tensor,
    signatures: torch.Tensor,
    num_chunks: int,
    bits: int,
    memory_rows: int,
    row_offset: int,
    num_rows: int,
    table_salt: int,
) -> torch.Tensor:
    """``(N, C)`` int64 memory rows of the chunks of each id (formula in the module docstring).

    Args:
        ids (torch.Tensor): ``(N,)`` raw ids, already checked to lie in ``[0, n)``.
        signatures (torch.Tensor): ``(n, S)`` uint8 signatures of the table (``S`` may be 0 when ``bits == 0``).
        num_chunks (int): ``C = d / Z``.
        bits (int): ``b``, bits per chunk code (``code_bits``); 0 = every id takes its hashed location.
        memory_rows (int): ``M``, rows of the (possibly shared) memory; ids without a signature spread over all.
        row_offset (int): first row of the table's own ``R`` rows in the memory.
        num_rows (int): ``R >= C``; chunk ``k``'s slice has ``P_k = R // C + (k < R mod C)`` rows.
        table_salt (int): decorrelates the hashes of tables sharing one memory.
    """
    ids = ids.to(torch.int64)
    h = _chunk_hash(ids, num_chunks, table_salt)
    hashed = h % memory_rows
    if bits == 0:
        return hashed
    chunk = torch.arange(num_chunks, device=ids.device, dtype=torch.int64)
    p = num_rows // num_chunks + (chunk < num_rows % num_chunks).to(torch.int64)  # (C,) slice sizes
    base = row_offset + chunk * (num_rows // num_chunks) + torch.clamp(chunk, max=num_rows % num_chunks)
    q = (1 << bits) - 1
    code = unpack_codes(signatures[ids], num_chunks, bits)
    start = code * p // q
    width = torch.clamp((code + 1) * p // q - start, min=1)
    return torch.where(code == q, hashed, base + start + h % width)


# --- co-occurrence --------------------------------------------------------------------------------------------------


def _row_cross(a: JaggedTensor, b: JaggedTensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ``(a value, b value, row)`` triples of the same row, as three aligned 1-D tensors."""
    len_a, len_b = a.lengths().to(torch.int64), b.lengths().to(torch.int64)
    rows = torch.arange(len_a.numel(), device=len_a.device)
    row_of_a = torch.repeat_interleave(rows, len_a)
    count = len_b[row_of_a]
    left = torch.repeat_interleave(a.values(), count)
    start_b = torch.cumsum(len_b, 0) - len_b
    start_pair = torch.cumsum(count, 0) - count
    within = torch.arange(int(count.sum()), device=len_a.device) - torch.repeat_interleave(start_pair, count)
    right = b.values()[torch.repeat_interleave(start_b[row_of_a], count) + within]
    return left.to(torch.int64), right.to(torch.int64), torch.repeat_interleave(row_of_a, count)


def co_occurrence_pairs(
    feature_dict: dict,
    features: Sequence[str],
    context_features: Sequence[str],
    labels: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(entity id, context token) pairs: every value of ``features`` with every value of each context feature in the
    same row. The token of value ``u`` of the ``c``-th context feature in a row with label ``y`` is
    ``((u mod 2**50) << 10) | (l << 8) | c`` with ``l = 0`` without labels, else ``1 + (y > 0.5)``."""
    if len(context_features) >= 1 << _TOKEN_FEATURE_BITS:
        raise ValueError(f"at most {(1 << _TOKEN_FEATURE_BITS) - 1} context features are supported")
    entities: List[torch.Tensor] = []
    tokens: List[torch.Tensor] = []
    label_code = None if labels is None else 1 + (labels.reshape(-1) > 0.5).to(torch.int64)
    for f in features:
        for c_index, c in enumerate(context_features):
            ent, val, row = _row_cross(feature_dict[f], feature_dict[c])
            tok = (val % _TOKEN_VALUE_MOD) << (_TOKEN_FEATURE_BITS + _TOKEN_LABEL_BITS) | c_index
            if label_code is not None:
                tok = tok | label_code.to(tok.device)[row] << _TOKEN_FEATURE_BITS
            entities.append(ent)
            tokens.append(tok)
    return torch.cat(entities), torch.cat(tokens)


# --- fitting --------------------------------------------------------------------------------------------------------


def spectral_embedding(
    entities: torch.Tensor, tokens: torch.Tensor, rank: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(seen ids, x, context)`` of (entity, token) pairs (duplicates allowed: a context is a set).

    ``seen``: the distinct entities, sorted. ``x``: their ``(n_seen, r)`` float64 embeddings, the top non-trivial left
    singular vectors of the degree-normalised incidence matrix ``D_e^{-1/2} A D_t^{-1/2}`` times their singular values,
    each column's largest-magnitude entry made positive, rows scaled to unit norm (zero rows stay zero);
    ``r = min(rank, min(n_seen, n_tokens) - 1)`` (may be 0). Exact SVD for small matrices (``n_seen * n_tokens <=
    2**22``), else seeded randomized SVD: deterministic on the CPU. ``context``: ``(n_seen,)`` index of the entity's
    token set among the distinct sets (entities with equal contexts share it; set equality by two 61-bit hashes).
    """
    seen, e = torch.unique(entities.to(torch.int64), return_inverse=True)
    tok_values, t = torch.unique(tokens.to(torch.int64), return_inverse=True)
    n_e, n_t = int(seen.numel()), int(tok_values.numel())
    pair = torch.unique(e * n_t + t)  # one entry per distinct (entity, token)
    e, t = pair // max(n_t, 1), pair % max(n_t, 1)
    fingerprint = torch.stack(
        [torch.zeros(n_e, dtype=torch.int64).index_add_(0, e, mix(tok_values[t], salt=s)) for s in _SET_SALTS]
        + [torch.bincount(e, minlength=n_e)],
        dim=1,
    )
    _, context = torch.unique(fingerprint, dim=0, return_inverse=True)
    r = min(rank, min(n_e, n_t) - 1)
    if r < 1:
        return seen, torch.zeros(n_e, 0, dtype=torch.float64), context
    de = torch.bincount(e, minlength=n_e).to(torch.float64)
    dt = torch.bincount(t, minlength=n_t).to(torch.float64)
    values = (de[e] * dt[t]).rsqrt()
    if n_e * n_t <= _DENSE_SVD_ENTRIES:
        dense = torch.zeros(n_e, n_t, dtype=torch.float64).index_put_((e, t), values)
        u, s, _ = torch.linalg.svd(dense, full_matrices=False)
    else:
        a = torch.sparse_coo_tensor(torch.stack([e, t]), values, (n_e, n_t), check_invariants=False).coalesce()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_FIT_SEED)
            u, s = sparse_svd_lowrank(a, q=min(r + 1 + _SVD_OVERSAMPLE, n_e, n_t), niter=_SVD_ITERS)
    # the leading pair (singular value 1, vector ~ sqrt(degree)) only encodes popularity
    x = u[:, 1 : r + 1] * s[1 : r + 1]
    peak = x.abs().argmax(0)
    x = x * torch.where(x[peak, torch.arange(r)] < 0, -1.0, 1.0)
    return seen, x / x.norm(dim=1, keepdim=True).clamp(min=1e-30), context


def sparse_svd_lowrank(a: torch.Tensor, q: int, niter: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(U, S)`` of ``torch.svd_lowrank(a, q, niter)`` for a sparse COO ``a``: the same algorithm (Halko et al.'s
    randomized range finder on the tall orientation, one Gaussian draw from the global generator, ``niter`` power
    iterations with QR), with ``a`` and its transpose in CSR, whose products are about 3x faster on the CPU than
    COO's (a signature fit on a 4M-id table spent most of its time there)."""
    m, n = a.shape
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        rows, cols = a.to_sparse_csr(), a.t().coalesce().to_sparse_csr()
    tall, wide = (cols, rows) if m < n else (rows, cols)  # tall: the orientation with more rows
    q_basis = torch.linalg.qr(tall @ torch.randn(tall.shape[1], q, dtype=a.dtype)).Q
    for _ in range(niter):
        q_basis = torch.linalg.qr(wide @ q_basis).Q
        q_basis = torch.linalg.qr(tall @ q_basis).Q
    b = (wide @ q_basis).mT  # Q^T tall, (q, tall columns)
    u_b, s, vh = torch.linalg.svd(b, full_matrices=False)
    return (vh.mH if m < n else q_basis @ u_b), s


def balanced_tree_codes(x: torch.Tensor, depth: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(n,)`` leaves in ``[0, 2**depth)`` of a balanced binary tree over the rows of ``x`` (``(n, q)`` float64).

    Each level splits every cell at its median projection (lower half -> child ``2c``, the rest -> ``2c + 1``; ties by
    row order) onto the cell's principal direction (sign: largest-magnitude coordinate positive), or onto a random
    direction from ``generator`` when given. Cells hold ``floor`` or ``ceil`` of ``n / 2**level`` rows at every level.
    """
    n, dims = x.shape
    cell = torch.zeros(n, dtype=torch.int64)
    for level in range(depth):
        num_cells = 1 << level
        if generator is not None:
            directions = torch.randn(num_cells, dims, generator=generator, dtype=torch.float64)
        elif dims > 0:
            count = torch.bincount(cell, minlength=num_cells).to(torch.float64).clamp(min=1)
            mean = torch.zeros(num_cells, dims, dtype=torch.float64).index_add_(0, cell, x) / count[:, None]
            xc = x - mean[cell]
            cov = torch.zeros(num_cells, dims, dims, dtype=torch.float64).index_add_(
                0, cell, xc.unsqueeze(2) * xc.unsqueeze(1)
            )
            directions = torch.linalg.eigh(cov).eigenvectors[:, :, -1]
            peak = directions.abs().argmax(1, keepdim=True)
            directions = directions * torch.where(directions.gather(1, peak) < 0, -1.0, 1.0)
        else:
            directions = torch.zeros(num_cells, 0, dtype=torch.float64)
        proj = (x * directions[cell]).sum(1)
        order = torch.argsort(proj, stable=True)
        order = order[torch.argsort(cell[order], stable=True)]  # by cell, then projection, then row
        counts = torch.bincount(cell, minlength=num_cells)
        first = torch.cumsum(counts, 0) - counts
        rank_in_cell = torch.empty(n, dtype=torch.int64)
        rank_in_cell[order] = torch.arange(n) - first[cell[order]]
        cell = 2 * cell + (2 * rank_in_cell >= counts[cell]).to(torch.int64)
    return cell


class SignatureBuilder:
    """Collects (entity, context token) pairs of one table and fits its per-chunk codes (module docstring).

    Args:
        num_entities (int): ids lie in ``[0, num_entities)``.
        num_chunks (int): ``C``.
        signature_bytes (int): ``S``; codes have ``code_bits(S, C)`` bits (``S = 0``: nothing is fitted).
        rank (int): components of the spectral embedding (at least ``4 C`` are used when the data allows).
        dedup_every (int): buffered pairs that trigger a de-duplication (bounds memory on long streams).
    """

    def __init__(
        self, num_entities: int, num_chunks: int, signature_bytes: int, rank: int = 64, dedup_every: int = 1 << 23
    ) -> None:
        self.num_entities = num_entities
        self.num_chunks = num_chunks
        self.signature_bytes = signature_bytes
        self.bits = code_bits(signature_bytes, num_chunks)
        self.rank = max(rank, _MIN_DIMS_PER_CHUNK * num_chunks)
        self._dedup_every = dedup_every
        self._pairs: List[torch.Tensor] = []
        self._buffered = 0
        self._codes: Optional[torch.Tensor] = None

    def update(self, entities: torch.Tensor, tokens: torch.Tensor) -> None:
        """Adds (entity, token) pairs; duplicates are harmless (the context is a set)."""
        if self.bits == 0 or entities.numel() == 0:
            return
        self._pairs.append(torch.stack([entities.cpu().to(torch.int64), tokens.cpu().to(torch.int64)], dim=1))
        self._buffered += entities.numel()
        self._codes = None
        if self._buffered >= self._dedup_every:
            self._pairs = [torch.unique(torch.cat(self._pairs), dim=0)]
            self._buffered = self._pairs[0].shape[0]

    @property
    def num_pairs(self) -> int:
        """(entity, token) pairs held (after any de-duplication)."""
        return self._buffered

    def codes(self) -> torch.Tensor:
        """``(n, C)`` int64 codes; ``2**bits - 1`` for entities without a signature (never seen, or no structure)."""
        if self._codes is not None:
            return self._codes
        q = (1 << self.bits) - 1
        codes = torch.full((self.num_entities, self.num_chunks), q, dtype=torch.int64)
        if self.bits > 0 and self._pairs:
            pairs = torch.cat(self._pairs)
            seen, x, context = spectral_embedding(pairs[:, 0], pairs[:, 1], self.rank)
            r = x.shape[1]
            if r > 0:
                # one point per distinct context: equal contexts always get equal codes, and a code's share of the
                # entities is balanced over distinct contexts
                first = torch.full((int(context.max()) + 1,), len(context), dtype=torch.int64)
                first = first.scatter_reduce(0, context, torch.arange(len(context)), reduce="amin")
                groups = max(1, min(self.num_chunks, r // _MIN_DIMS_PER_CHUNK))
                for k in range(self.num_chunks):
                    sub = x[first, k % groups :: groups]
                    gen = None if k < groups else torch.Generator().manual_seed(_FIT_SEED + k)
                    leaf = balanced_tree_codes(sub, self.bits, gen)
                    codes[seen, k] = (leaf * q >> self.bits)[context]
        self._codes = codes
        return codes

    def signatures(self) -> torch.Tensor:
        """``(n, S)`` uint8 packed signatures."""
        return pack_codes(self.codes(), self.bits, self.signature_bytes)

    def coverage(self) -> float:
        """Fraction of entities that received a signature."""
        if self.num_entities == 0 or self.bits == 0:
            return 0.0
        return float((self.codes()[:, 0] != (1 << self.bits) - 1).to(torch.float64).mean())


def build_signatures(
    batches: Iterable[Batch],
    tables: Sequence[Tuple[str, int, Sequence[str], Optional[Sequence[str]], bool]],
    builders: Sequence[SignatureBuilder],
    max_rows: Optional[int] = None,
    progress: bool = False,
) -> None:
    """Streams training rows into one ``SignatureBuilder`` per table.

    Args:
        batches (Iterable): training rows: KJTs (all features a context may name), or ``(kjt, labels)`` pairs whose
            ``(B,)`` labels (binary: ``> 0.5`` is positive) enter the tokens of tables that use them.
        tables: per table ``(name, num_entities, features, context_features or None = every other input feature,
            use labels)``.
        builders (Sequence[SignatureBuilder]): one per table, updated in place.
        max_rows (Optional[int]): stop after this many rows (the sample size).
        progress (bool): show a tqdm bar.
    """
    seen = 0
    it: Iterable[Batch] = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="LMA signatures", unit="batch")
    for item in it:
        kjt, labels = item if isinstance(item, tuple) else (item, None)
        if max_rows is not None and seen >= max_rows:
            break
        if max_rows is not None and seen + kjt.stride() > max_rows:
            kjt = _first_rows(kjt, max_rows - seen)
            labels = labels[: kjt.stride()] if labels is not None else None
        fd = kjt.to_dict()
        for builder, (name, n, features, context, use_labels) in zip(builders, tables):
            if builder.bits == 0:
                continue
            ctx = list(context) if context is not None else [k for k in kjt.keys() if k not in features]
            missing = [c for c in [*features, *ctx] if c not in fd]
            if missing:
                raise ValueError(f"LMA table '{name}': features {missing} are missing from the signature batches")
            ent, tok = co_occurrence_pairs(fd, features, ctx, labels if use_labels else None)
            if ent.numel() and (int(ent.min()) < 0 or int(ent.max()) >= n):
                raise ValueError(
                    f"LMA table '{name}': ids must lie in [0, {n}), got [{int(ent.min())}, {int(ent.max())}]"
                )
            builder.update(ent, tok)
        seen += kjt.stride()


def _first_rows(kjt: KeyedJaggedTensor, rows: int) -> KeyedJaggedTensor:
    fd = kjt.to_dict()
    parts = [
        JaggedTensor(values=fd[k].values()[: int(fd[k].lengths()[:rows].sum())], lengths=fd[k].lengths()[:rows])
        for k in kjt.keys()
    ]
    return KeyedJaggedTensor.from_jt_dict(dict(zip(kjt.keys(), parts)))
