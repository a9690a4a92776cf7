# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""How LMA shares memory on a recipe's data: per chunk slot, its row's co-occupants and how many share it by code.

Builds the LMA tables of a DLRM recipe config, fits their signatures exactly as the recipe does (the first
``train.lma_signature_rows`` rows of the seeded shuffled training split, with labels), and for every
(id, chunk) slot of every LMA table counts the other slots on the same memory row ("co-occupants") and those among
them that are there because their code equals the slot's own (same table, chunk and code; both with a signature).
Averages are over ids, uniformly. With ``--reference-weights`` (the state dict of a trained stock model, e.g. from
``scripts/lma_explore.py train --dump``), it also reports how alike co-occupants of one table are: the mean cosine
between the trained stock embeddings of two ids sharing a row of a chunk, against two random ids.
``--old-lsh FILE`` evaluates the MinHash-key allocation of a former ``torchrec_memcom/lsh.py`` (e.g.
``git show 816ac5e:torchrec_memcom/lsh.py > /tmp/old_lsh.py``) on the same tables.

    python scripts/lma_allocation_stats.py --config ml1m_lma
"""

import argparse
import importlib.util
import json
import sys
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from torchrec_memcom import CompressedEmbeddingBagCollection, LMAEmbeddingBagConfig
from torchrec_memcom.lsh import unpack_codes
from torchrec_memcom.recipes.schemas import load_recipe_config
from torchrec_memcom.recipes.training import build_tables


def _slot_stats(rows: torch.Tensor, keys: torch.Tensor, signed: torch.Tensor) -> Dict[str, float]:
    """Over slots (``rows (N,)``, sharing keys ``(N, m)``, ``signed (N,)``): mean co-occupants of a slot's row, mean
    co-occupants with the same key (both signed), and the largest row load."""
    _, row_index, row_count = torch.unique(rows, return_inverse=True, return_counts=True)
    co = (row_count[row_index] - 1).to(torch.float64)
    _, key_index, key_count = torch.unique(
        torch.cat([rows.unsqueeze(1), keys], dim=1), dim=0, return_inverse=True, return_counts=True
    )
    signed_per_key = torch.zeros(len(key_count), dtype=torch.int64).index_add_(0, key_index, signed.to(torch.int64))
    equal = torch.where(signed, signed_per_key[key_index] - 1, 0).to(torch.float64)
    return {
        "co_occupants": float(co.mean()),
        "equal_code_co_occupants": float(equal.mean()),
        "max_row_load": float(row_count.max()),
    }


Slots = Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # table -> (rows (n, C), codes (n, C), signed (n,))


def _report(name: str, per_table: Slots, by_table: bool) -> Dict[str, float]:
    """Slot statistics of one memory; codes match within a (table if ``by_table``, chunk)."""
    rows, keys, signed = [], [], []
    for t_index, (loc, code, has) in enumerate(per_table.values()):
        n, c = loc.shape
        chunk = torch.arange(c).expand(n, c)
        table = torch.full((n, c), t_index if by_table else 0)
        rows.append(loc.reshape(-1))
        keys.append(torch.stack([table, chunk, code], dim=-1).reshape(-1, 3))
        signed.append(has.unsqueeze(1).expand(n, c).reshape(-1))
    out = _slot_stats(torch.cat(rows), torch.cat(keys), torch.cat(signed))
    print(
        f"{name}: a slot's row holds {out['co_occupants']:.2f} other slots on average, "
        f"{out['equal_code_co_occupants']:.2f} of them by equal code; max load {out['max_row_load']:.0f}",
        flush=True,
    )
    return out


def _cosines(per_table: Slots, weights: Dict[str, torch.Tensor]) -> Dict[str, Tuple[float, float]]:
    """Per table: (mean cosine of same-table co-occupant pairs, mean cosine of random pairs) of reference embeddings."""
    out = {}
    for name, (loc, _, _) in per_table.items():
        emb = next(v for k, v in weights.items() if k.endswith(f"{name}.weight")).to(torch.float64)
        unit = emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-30)
        total, pairs = 0.0, 0.0
        for k in range(loc.shape[1]):
            _, row = torch.unique(loc[:, k], return_inverse=True)
            sums = torch.zeros(int(row.max()) + 1, unit.shape[1], dtype=torch.float64).index_add_(0, row, unit)
            count = torch.bincount(row).to(torch.float64)
            total += float(((sums**2).sum(1) - count).sum())  # sum over ordered pairs i != j of cos(i, j)
            pairs += float((count * (count - 1)).sum())
        n = unit.shape[0]
        random_pairs = (float((unit.sum(0) ** 2).sum()) - n) / (n * (n - 1))
        out[name] = (total / max(pairs, 1.0), random_pairs)
        print(f"  {name}: co-occupants' stock cosine {out[name][0]:.3f} (random pairs {random_pairs:.3f})", flush=True)
    return out


def _batches(cfg, with_labels: bool):  # type: ignore[no-untyped-def]
    data = cfg.data.batches("train", 4096, rank=0, world_size=1, train=True, seed=cfg.train.seed)
    for b in data:
        yield (b.sparse_features, b.labels) if with_labels else b.sparse_features


def current(  # type: ignore[no-untyped-def]
    cfg, tables: Sequence[LMAEmbeddingBagConfig], weights: Optional[Dict[str, torch.Tensor]] = None
) -> Dict[str, Dict[str, float]]:
    ebc = CompressedEmbeddingBagCollection(list(tables))
    coverage = ebc.fit_signatures(_batches(cfg, True), max_rows=cfg.train.lma_signature_rows)
    print("coverage", json.dumps(coverage), flush=True)
    out: Dict[str, Dict[str, float]] = {}
    for group in sorted({t.group() for t in tables}):
        per_table = {}
        for t in (t for t in tables if t.group() == group):
            ids = torch.arange(t.num_embeddings)
            loc = ebc.locations(t.name, ids)
            bits = ebc.methods()["lma"].location_params(t.name)[1]  # 0 for allocation="hashed"
            if bits:
                code = unpack_codes(ebc.table_signatures(t.name), t.num_chunks(), bits)
                has = code[:, 0] != (1 << bits) - 1
            else:
                code, has = torch.zeros_like(loc), torch.zeros(len(ids), dtype=torch.bool)
            per_table[t.name] = (loc, code, has)
        out[group] = _report(f"group {group}", per_table, by_table=True)
        if weights is not None:
            for name, (co, rnd) in _cosines(per_table, weights).items():
                out[group][f"{name}_cosine"], out[group][f"{name}_random_cosine"] = co, rnd
    return out


def old(  # type: ignore[no-untyped-def]
    cfg, tables: Sequence[LMAEmbeddingBagConfig], path: str, weights: Optional[Dict[str, torch.Tensor]] = None
) -> Dict[str, Dict[str, float]]:
    """The former allocation: 4-bit MinHash keys shared by all chunks, ``keys_per_chunk`` of them hashed per chunk."""
    spec = importlib.util.spec_from_file_location("old_lsh", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    group_rows: Dict[str, int] = {}
    for t in tables:
        group_rows[t.group()] = group_rows.get(t.group(), 0) + t.rows()
    sig_bytes = [int(t.signature_bytes or 4) for t in tables]
    builders = mod.build_signatures(
        _batches(cfg, False),
        [(t.name, t.num_embeddings, t.feature_names, t.context_features) for t in tables],
        sig_bytes,
        max_rows=cfg.train.lma_signature_rows,
    )
    out: Dict[str, Dict[str, float]] = {}
    for group in sorted(group_rows):
        per_table = {}
        for i, (t, b, s) in enumerate(zip(tables, builders, sig_bytes)):
            if t.group() != group:
                continue
            kpc = mod.default_keys_per_chunk(group_rows[group], s)
            sel = mod.chunk_key_selection(t.num_chunks(), 2 * s, kpc)
            keys = b.keys()
            ids = torch.arange(t.num_embeddings)
            loc = mod.chunk_locations(ids, b.signatures(), sel, group_rows[group], i)
            code = (keys[:, sel] << (4 * torch.arange(kpc))).sum(-1)  # (n, C) packed selected keys
            per_table[t.name] = (loc, code, keys[:, 0] != mod.MISSING_KEY)
        # the old hash ignored the table: equal codes of different tables shared a row too
        out[group] = _report(f"old group {group} (keys_per_chunk {kpc})", per_table, by_table=False)
        if weights is not None:
            for name, (co, rnd) in _cosines(per_table, weights).items():
                out[group][f"{name}_cosine"], out[group][f"{name}_random_cosine"] = co, rnd
    return out


def main(argv: Optional[List[str]] = None) -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="ml1m_lma", help="DLRM preset or YAML path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--old-lsh", default=None, help="a former lsh.py: evaluate its MinHash-key allocation instead")
    p.add_argument("--reference-weights", default=None, help="state dict of a trained stock model (see above)")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args(argv)
    cfg = load_recipe_config(args.config, args.set, recipe="dlrm")
    data = cfg.data
    tables = build_tables(data.feature_names(), data.table_sizes(), cfg.model.embedding_dim, cfg.tables)
    lma = [t for t in tables if isinstance(t, LMAEmbeddingBagConfig)]
    if not lma:
        sys.exit(f"{args.config}: no LMA tables")
    weights = torch.load(args.reference_weights) if args.reference_weights else None
    result = old(cfg, lma, args.old_lsh, weights) if args.old_lsh else current(cfg, lma, weights)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
