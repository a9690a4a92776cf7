# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Compact MinHash signatures from co-occurrence, and LMA chunk locations computed from them on the fly.

Context of an entity ``v`` of feature ``f``: the set ``S(v)`` of (feature, value) tokens of the chosen context features
that occur in the same rows as ``v`` in a sample of training rows (e.g. the users who rated a movie). The signature of
``v`` is ``2 * signature_bytes`` MinHash keys of 4 bits: ``key_j(v) = (min_{x in S(v)} g_j(x)) mod 15``, packed two
per byte, with ``g_j = mix(., salt=mix(1000 + j))`` (``mix`` with nearby salts is nearly one function, so the salts are
themselves hashed). A key matches between ``u`` and ``v`` with probability ``J + (1 - J) / 15`` (``J`` = Jaccard of the
contexts). The value 15 is reserved: an entity never seen in the sample has all keys 15 ("no signature").

Chunk ``k`` of ``v`` lives at ``loc_k(v) = mix(code_k(v), salt=k) mod rows``, where ``code_k`` concatenates the
``keys_per_chunk`` keys that chunk ``k`` selects (a fixed pseudo-random choice per ``k``). Similar contexts share many
keys and therefore many chunks; entities without a signature fall back to ``mix(id, table)`` (the hashing trick).
This is the on-the-fly LMA hash of the authors' ROBE kernel (``lma_hash``), with the signature built as above.
"""

import math
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_memcom.hashing import _P, mix

__all__ = [
    "MISSING_KEY",
    "SignatureBuilder",
    "chunk_key_selection",
    "chunk_locations",
    "co_occurrence_pairs",
    "default_keys_per_chunk",
    "pack_keys",
    "unpack_keys",
]

MISSING_KEY: int = 15
_KEY_MODULUS: int = 15
_MAX_KEYS_PER_CHUNK: int = 15  # 16**15 = 2**60 keeps the packed code inside int64
_MINHASH_SALT: int = 1_000
_FALLBACK_SALT: int = 4_096
_TOKEN_FEATURE_BITS: int = 8
_TOKEN_VALUE_MOD: int = 1 << 52


def default_keys_per_chunk(memory_rows: int, signature_bytes: int) -> int:
    """Enough keys that ``15**keys >= 16 * memory_rows`` (so key codes can reach every row), in ``[2, 2 * bytes]``."""
    need = math.ceil(math.log(16 * max(memory_rows, 1)) / math.log(_KEY_MODULUS))
    return max(2, min(need, 2 * signature_bytes, _MAX_KEYS_PER_CHUNK))


def chunk_key_selection(num_chunks: int, num_keys: int, keys_per_chunk: int) -> torch.Tensor:
    """``(num_chunks, keys_per_chunk)`` int64: which signature keys each chunk hashes (fixed, seed-independent)."""
    if keys_per_chunk > min(num_keys, _MAX_KEYS_PER_CHUNK):
        raise ValueError(f"keys_per_chunk={keys_per_chunk} exceeds min({num_keys} keys, {_MAX_KEYS_PER_CHUNK})")
    g = torch.Generator().manual_seed(20260521)
    return torch.stack([torch.randperm(num_keys, generator=g)[:keys_per_chunk] for _ in range(num_chunks)])


def pack_keys(keys: torch.Tensor) -> torch.Tensor:
    """``(n, 2S)`` keys in ``[0, 15]`` -> ``(n, S)`` uint8, two 4-bit keys per byte."""
    k = keys.to(torch.uint8)
    return k[:, 0::2] | (k[:, 1::2] << 4)


def unpack_keys(signatures: torch.Tensor) -> torch.Tensor:
    """``(n, S)`` uint8 -> ``(n, 2S)`` int64 keys."""
    s = signatures.to(torch.int64)
    return torch.stack([s & 0xF, s >> 4], dim=-1).flatten(-2)


def chunk_locations(
    ids: torch.Tensor,
    signatures: torch.Tensor,
    key_selection: torch.Tensor,
    num_rows: int,
    table_salt: int,
) -> torch.Tensor:
    """``(N, K)`` int64 rows of the memory holding chunk ``k`` of each id.

    Args:
        ids (torch.Tensor): ``(N,)`` raw ids, already checked to lie in ``[0, n)``.
        signatures (torch.Tensor): ``(n, S)`` uint8 packed signatures of the table.
        key_selection (torch.Tensor): ``(K, keys_per_chunk)`` from ``chunk_key_selection``.
        num_rows (int): rows of the (possibly shared) memory.
        table_salt (int): distinguishes the fallback locations of tables sharing one memory.
    """
    ids = ids.to(torch.int64)
    keys = unpack_keys(signatures[ids])  # (N, 2S)
    num_chunks, kpc = key_selection.shape
    selected = keys[:, key_selection]  # (N, K, kpc)
    shifts = 4 * torch.arange(kpc, device=ids.device, dtype=torch.int64)
    code = (selected << shifts).sum(-1)  # (N, K) < 2**60
    chunk = torch.arange(num_chunks, device=ids.device, dtype=torch.int64).unsqueeze(0)
    by_signature = mix(code, salt=chunk)
    # mix is linear in its input, so it maps consecutive ids to a lattice: with salt = chunk + const, ids colliding in
    # one chunk collided in every chunk when num_rows is a power of two, and some salts leave few distinct rows.
    # Hashed salts and xor-shifts between two rounds make the per-chunk fallbacks behave as independent hashes.
    y = mix((ids << 10 | (table_salt & 0x3FF)).unsqueeze(1), salt=mix(chunk + _FALLBACK_SALT))
    y = mix(y ^ (y >> 15), salt=mix(chunk + 2 * _FALLBACK_SALT))
    fallback = y ^ (y >> 13)
    has_signature = (keys[:, :1] != MISSING_KEY).expand(-1, num_chunks)
    return torch.where(has_signature, by_signature, fallback) % num_rows


def _row_cross(a: JaggedTensor, b: JaggedTensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """All ``(a value, b value)`` pairs of the same row, as two aligned 1-D tensors."""
    len_a, len_b = a.lengths().to(torch.int64), b.lengths().to(torch.int64)
    rows = torch.arange(len_a.numel(), device=len_a.device)
    row_of_a = torch.repeat_interleave(rows, len_a)
    count = len_b[row_of_a]
    left = torch.repeat_interleave(a.values(), count)
    start_b = torch.cumsum(len_b, 0) - len_b
    start_pair = torch.cumsum(count, 0) - count
    within = torch.arange(int(count.sum()), device=len_a.device) - torch.repeat_interleave(start_pair, count)
    right = b.values()[torch.repeat_interleave(start_b[row_of_a], count) + within]
    return left.to(torch.int64), right.to(torch.int64)


def co_occurrence_pairs(
    feature_dict: dict,
    features: Sequence[str],
    context_features: Sequence[str],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(entity id, context token) pairs: every value of ``features`` with every value of each context feature in the
    same row; the token of value ``u`` of context feature ``c`` is ``(u mod 2**52) * 256 + index(c)``."""
    if len(context_features) >= 1 << _TOKEN_FEATURE_BITS:
        raise ValueError(f"at most {(1 << _TOKEN_FEATURE_BITS) - 1} context features are supported")
    entities: List[torch.Tensor] = []
    tokens: List[torch.Tensor] = []
    for f in features:
        for c_index, c in enumerate(context_features):
            ent, val = _row_cross(feature_dict[f], feature_dict[c])
            entities.append(ent)
            tokens.append((val % _TOKEN_VALUE_MOD) << _TOKEN_FEATURE_BITS | c_index)
    return torch.cat(entities), torch.cat(tokens)


class SignatureBuilder:
    """Streams co-occurrence pairs into per-entity MinHash minima and packs them into signatures.

    Args:
        num_entities (int): ids lie in ``[0, num_entities)``.
        signature_bytes (int): ``S``; the signature holds ``2 S`` keys.
        block (int): pairs hashed at a time (bounds the ``block x 2S`` temporaries).
    """

    def __init__(self, num_entities: int, signature_bytes: int, block: int = 1 << 20) -> None:
        self.num_keys = 2 * signature_bytes
        self.block = block
        # int32 halves the footprint; every g_j value is < P = 2**31 - 1, and P itself means "never seen".
        self._mins = torch.full((num_entities, self.num_keys), _P, dtype=torch.int32)
        # Hashed salts: mix(x, salt=s) and mix(x, salt=s + 1) differ by about 2x mod P, so consecutive salts would
        # pick the same minimising token for nearly every key (one MinHash repeated 2S times, not 2S MinHashes).
        self._salts = mix(_MINHASH_SALT + torch.arange(self.num_keys, dtype=torch.int64)).unsqueeze(0)

    def update(self, entities: torch.Tensor, tokens: torch.Tensor) -> None:
        """Adds (entity, token) pairs; duplicates are harmless (MinHash takes minima)."""
        entities, tokens = entities.cpu().to(torch.int64), tokens.cpu().to(torch.int64)
        for lo in range(0, entities.numel(), self.block):
            e = entities[lo : lo + self.block]
            g = mix(tokens[lo : lo + self.block].unsqueeze(1), salt=self._salts).to(torch.int32)
            self._mins.scatter_reduce_(0, e.unsqueeze(1).expand(-1, self.num_keys), g, reduce="amin")

    def keys(self) -> torch.Tensor:
        """``(n, 2S)`` int64 keys; rows of entities never seen are all ``MISSING_KEY``."""
        mins = self._mins.to(torch.int64)
        keys = mins % _KEY_MODULUS
        return torch.where(mins == _P, torch.full_like(keys, MISSING_KEY), keys)

    def signatures(self) -> torch.Tensor:
        """``(n, S)`` uint8 packed signatures."""
        return pack_keys(self.keys())

    def coverage(self) -> float:
        """Fraction of entities that received a signature."""
        return float((self._mins[:, 0] != _P).float().mean()) if self._mins.numel() else 0.0


def build_signatures(
    batches: Iterable[KeyedJaggedTensor],
    tables: Sequence[Tuple[str, int, Sequence[str], Optional[Sequence[str]]]],
    signature_bytes: Sequence[int],
    max_rows: Optional[int] = None,
    progress: bool = False,
) -> List[SignatureBuilder]:
    """Builds one ``SignatureBuilder`` per table from training batches.

    Args:
        batches (Iterable[KeyedJaggedTensor]): training rows (all features a context may name).
        tables: per table ``(name, num_entities, features, context_features or None = every other input feature)``.
        signature_bytes (Sequence[int]): per table.
        max_rows (Optional[int]): stop after this many rows (the sample size).
        progress (bool): show a tqdm bar.
    """
    builders = [SignatureBuilder(n, s) for (_, n, _, _), s in zip(tables, signature_bytes)]
    seen = 0
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="LMA signatures", unit="batch")
    for kjt in it:
        if max_rows is not None and seen >= max_rows:
            break
        if max_rows is not None and seen + kjt.stride() > max_rows:
            kjt = _first_rows(kjt, max_rows - seen)
        fd = kjt.to_dict()
        for builder, (name, n, features, context) in zip(builders, tables):
            ctx = list(context) if context is not None else [k for k in kjt.keys() if k not in features]
            missing = [c for c in [*features, *ctx] if c not in fd]
            if missing:
                raise ValueError(f"LMA table '{name}': features {missing} are missing from the signature batches")
            ent, tok = co_occurrence_pairs(fd, features, ctx)
            if ent.numel() and (int(ent.min()) < 0 or int(ent.max()) >= n):
                raise ValueError(
                    f"LMA table '{name}': ids must lie in [0, {n}), got [{int(ent.min())}, {int(ent.max())}]"
                )
            builder.update(ent, tok)
        seen += kjt.stride()
    return builders


def _first_rows(kjt: KeyedJaggedTensor, rows: int) -> KeyedJaggedTensor:
    fd = kjt.to_dict()
    parts = [
        JaggedTensor(values=fd[k].values()[: int(fd[k].lengths()[:rows].sum())], lengths=fd[k].lengths()[:rows])
        for k in kjt.keys()
    ]
    return KeyedJaggedTensor.from_jt_dict(dict(zip(kjt.keys(), parts)))
