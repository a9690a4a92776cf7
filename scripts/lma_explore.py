# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Exploration tool behind docs/LMA.md: train the ML-1M DLRM recipe with LMA locations from an alternative allocation.

Not part of the library. ``locations`` computes, for the recipe's LMA tables (user, movie, zip in one memory), an
``(n, C)`` table of memory rows per table from one of:

- ``minhash:K``: the authors' design, independent full-width MinHashes: chunk ``k`` hashes ``K`` min-hash values
  of the id's context (movie: its raters, user: the movies rated, zip: the movies its users rated; add ``+signed`` to
  make the tokens (value, label)) into a row of the whole memory.
- ``oracle``: product quantisation of a trained stock model's embeddings (``--stock`` from ``train --dump``): chunk
  ``k`` k-means-clusters the ``k``-th ``Z``-dim slice of every id's stock embedding into ``rows / C`` clusters, one row
  each (per table). An upper reference: it needs the full model it is meant to replace.
- ``sketch``: like the shipped allocation (per-table chunk slices, balanced PCA trees, labelled context) but on a
  random projection of the context vector instead of its SVD.

``train`` runs ``examples/dlrm/train.py`` in-process with ``--locations`` forced into the LMA module (by replacing the
location function the module calls), or plain, and ``--dump`` saves the trained stock tables.

    python scripts/lma_explore.py locations minhash:2 /tmp/minhash2.pt
    python scripts/lma_explore.py train --locations /tmp/minhash2.pt -- \\
        --config examples/dlrm/configs/ml1m_lma.yaml --set eval.final_split=val
"""

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional, Tuple

import torch

from torchrec_memcom.datasets.movielens import MovieLensCTR
from torchrec_memcom.hashing import mix
from torchrec_memcom.lsh import balanced_tree_codes

_ROWS = {"t_user": 1132, "t_movie": 694, "t_zip": 644}  # the recipe's 16x rows with 4-byte signatures (2470 in all)
_CHUNKS = 4  # d = 64, Z = 16


def _contexts(signed: bool) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, int]]:
    """Per table: (entity, token) pairs of the training split and the number of entities."""
    ctr = MovieLensCTR()
    d = ctr.data
    rows = ctr.rating_rows("train")
    u = torch.from_numpy(d.user[rows].copy()).long()
    m = torch.from_numpy(d.movie[rows].copy()).long()
    lab = torch.from_numpy(ctr.labels("train").copy()).long() if signed else torch.zeros_like(u)
    zip_of = torch.from_numpy(d.zip.copy()).long()
    return {
        "t_user": (u, m * 2 + lab, d.num_users),
        "t_movie": (m, u * 2 + lab, d.num_movies),
        "t_zip": (zip_of[u], m * 2 + lab, d.num_embeddings("zip")),
    }


def _minhash(k: int, signed: bool) -> Dict[str, torch.Tensor]:
    total = sum(_ROWS.values())
    out = {}
    for name, (ent, tok, n) in _contexts(signed).items():
        salts = mix(torch.arange(1000, 1000 + _CHUNKS * k)).view(1, -1)
        g = mix(tok.unsqueeze(1), salt=salts)
        mins = torch.full((n, _CHUNKS * k), 2**31, dtype=torch.int64)
        mins = mins.scatter_reduce(0, ent.unsqueeze(1).expand(-1, _CHUNKS * k), g, "amin").view(n, _CHUNKS, k)
        code = torch.zeros(n, _CHUNKS, dtype=torch.int64)
        for j in range(k):
            code = mix(code * 7 + mins[:, :, j] % (1 << 31), salt=torch.arange(_CHUNKS).view(1, -1) + 77)
        out[name] = code % total
    return out


def _kmeans(x: torch.Tensor, k: int, g: torch.Generator, iters: int = 30) -> torch.Tensor:
    cent = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(x, cent).argmin(1)
        s = torch.zeros_like(cent).index_add_(0, a, x)
        c = torch.bincount(a, minlength=k).to(x.dtype)
        fill = x[torch.randint(0, x.shape[0], (k,), generator=g)]
        cent = torch.where((c == 0)[:, None], fill, s / c.clamp(min=1)[:, None])
    return torch.cdist(x, cent).argmin(1)


def _sliced(codes: Dict[str, torch.Tensor], num_codes: Dict[str, int]) -> Dict[str, torch.Tensor]:
    """Code ``c`` of chunk ``k`` of table ``t`` -> its block of table ``t``'s slice ``k`` (as the shipped design)."""
    out, offset = {}, 0
    for name, rows in _ROWS.items():
        p = rows // _CHUNKS
        c = codes[name]
        out[name] = offset + torch.arange(_CHUNKS) * p + c * p // num_codes[name]
        offset += rows
    return out


def _oracle(stock: str) -> Dict[str, torch.Tensor]:
    sd = torch.load(stock)
    g = torch.Generator().manual_seed(0)
    codes, num = {}, {}
    for name, rows in _ROWS.items():
        emb = next(v for k, v in sd.items() if k.endswith(f"{name}.weight")).to(torch.float32)
        z = emb.shape[1] // _CHUNKS
        per = rows // _CHUNKS
        codes[name] = torch.stack([_kmeans(emb[:, k * z : (k + 1) * z], per, g) for k in range(_CHUNKS)], dim=1)
        num[name] = per
    return _sliced(codes, num)


def _sketch(rank: int = 64, bits: int = 8) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    codes, num = {}, {}
    for name, (ent, tok, n) in _contexts(True).items():
        tok_values, t = torch.unique(tok, return_inverse=True)
        de = torch.bincount(ent, minlength=n).to(torch.float64)
        dt = torch.bincount(t).to(torch.float64)
        r = torch.randn(len(tok_values), rank, generator=g, dtype=torch.float64)
        x = torch.zeros(n, rank, dtype=torch.float64).index_add_(0, ent, r[t] / (de[ent] * dt[t]).sqrt()[:, None])
        x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-30)
        leaves = [balanced_tree_codes(x[:, k::_CHUNKS], bits) for k in range(_CHUNKS)]
        codes[name] = torch.stack([leaf * ((1 << bits) - 1) >> bits for leaf in leaves], dim=1)
        num[name] = (1 << bits) - 1
    return _sliced(codes, num)


def locations(allocation: str, stock: Optional[str]) -> Dict[str, torch.Tensor]:
    kind, _, arg = allocation.partition(":")
    if kind == "minhash":
        k, _, flag = arg.partition("+")
        return _minhash(int(k), flag == "signed")
    if kind == "oracle":
        if stock is None:
            sys.exit("oracle needs --stock (from: train --dump ... with examples/dlrm/configs/ml1m_stock.yaml)")
        return _oracle(stock)
    if kind == "sketch":
        return _sketch()
    sys.exit(f"unknown allocation {allocation!r}")


def load_stats(locs: Dict[str, torch.Tensor]) -> str:
    occ = torch.bincount(torch.cat([v.flatten() for v in locs.values()]), minlength=sum(_ROWS.values()))
    mean = float((occ.to(torch.float64) ** 2).sum() / occ.sum()) - 1
    return f"rows used {int((occ > 0).sum())}/{occ.numel()}, a slot's row holds {mean:.1f} others, max {int(occ.max())}"


def train(argv: List[str], forced: Optional[str], dump: Optional[str]) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "dlrm"))
    import train as recipe  # noqa: E402  (examples/dlrm/train.py)

    import torchrec_memcom.modules.lma as lma_module

    if forced is not None:
        table = torch.load(forced)

        def fixed(ids: torch.Tensor, *args: object, out: Optional[torch.Tensor] = None) -> torch.Tensor:
            # table_salt (the last positional argument) is the table's index in the collection
            loc = list(table.values())[int(args[-1])][ids.long()]  # type: ignore[call-overload]
            return out.copy_(loc) if out is not None else loc

        lma_module.lma_locations = fixed  # type: ignore[assignment]
    args = recipe.parse_args(argv)
    cfg = recipe.load_recipe_config(args.config, args.set)
    run = recipe.DLRMRecipe(cfg, recipe.init_distributed())
    try:
        run.setup()
        run.train()
        run.finish()
        if dump is not None:
            state = run.model.state_dict()
            weights = {
                k: getattr(v, "local_tensor", lambda v=v: v)() for k, v in state.items() if k.endswith(".weight")
            }
            torch.save({k: torch.as_tensor(v).detach().clone() for k, v in weights.items()}, dump)
    finally:
        run.cleanup()


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    loc = sub.add_parser("locations")
    loc.add_argument("allocation", help="minhash:K[+signed] | oracle | sketch")
    loc.add_argument("out")
    loc.add_argument("--stock", default=None, help="state dict of a trained stock model (train --dump)")
    tr = sub.add_parser("train")
    tr.add_argument("--locations", default=None)
    tr.add_argument("--dump", default=None, help="save the trained tables' weights here")
    tr.add_argument("recipe_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.cmd == "locations":
        locs = locations(a.allocation, a.stock)
        print(a.allocation, load_stats(locs), flush=True)
        torch.save(locs, a.out)
    else:
        rest = a.recipe_args[1:] if a.recipe_args[:1] == ["--"] else a.recipe_args
        train(rest, a.locations, a.dump)


if __name__ == "__main__":
    main()
