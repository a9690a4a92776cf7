# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""The id transform's launch replayed from CUDA graphs (``modules.launch_graphs.LaunchGraphs``): the same physical
KJTs as the launch itself, batch after batch, with earlier batches' outputs left intact, and the input check still
raising; and ``LaunchGraphs`` on its own against plain arithmetic."""

import copy
import pickle
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tests.modules.test_compressed import _tables
from tests.reference import id_ranges, random_kjt
from torchrec_memcom import CompressedEmbeddingBagCollection
from torchrec_memcom.modules.launch_graphs import LaunchGraphs, bucket
from torchrec_memcom.modules.transform import EntitySlots, IdTransform

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _double_plus_one(static_in: List[Optional[torch.Tensor]], static_out: List[torch.Tensor]) -> None:
    x = static_in[0]
    assert x is not None
    static_out[0].copy_(x * 2 + 1)
    static_out[1].copy_(x.sum().reshape(1))


def test_cpu_inputs_run_eagerly_and_copies_start_without_graphs() -> None:
    graphs = LaunchGraphs(max_graphs=3)
    x = torch.arange(5)
    for _ in range(3):
        assert graphs("k", [x], [8], [(torch.int64, 8), (torch.int64, 1)], _double_plus_one) is None
    assert graphs.graphs == {}
    graphs._seen["k"] = 5
    for copied in (copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))):
        assert copied.max_graphs == 3 and copied.graphs == {} and copied._seen == {}
    module = CompressedEmbeddingBagCollection(_tables())
    assert isinstance(module.id_transform.graphs, LaunchGraphs)
    assert copy.deepcopy(module).id_transform.graphs is not module.id_transform.graphs


def test_environment_switch_turns_the_replay_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHREC_MEMCOM_TRANSFORM_GRAPHS", "0")
    assert CompressedEmbeddingBagCollection(_tables()).id_transform.graphs is None


@pytest.mark.gpu
@needs_cuda
def test_launch_graphs_pad_copy_and_refuse() -> None:
    """First call of a key eager (``None``), then replays: each batch's outputs are its own (a later replay does not
    change them), padding reads zeros, ``max_graphs`` and a capture in progress send calls back to the caller."""
    graphs = LaunchGraphs(max_graphs=1)
    outputs = [(torch.int64, 16), (torch.int64, 1)]
    xs = [torch.arange(n, device=CUDA) * (n + 1) for n in (13, 9, 16, 11)]
    assert graphs("a", [xs[0]], [16], outputs, _double_plus_one) is None
    got = [graphs("a", [x], [16], outputs, _double_plus_one) for x in xs]
    assert len(graphs.graphs) == 1
    for x, out in zip(xs, got):
        assert out is not None
        assert torch.equal(out[0][: x.numel()], x * 2 + 1)
        assert out[0].numel() == 16 and out[1].item() >= int(x.sum())  # padding: earlier batches' ids or zeros
    # beyond max_graphs: eager, every time
    for _ in range(3):
        assert graphs("b", [xs[0]], [16], outputs, _double_plus_one) is None
    # another stream: the replay waits for the last one's
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = graphs("a", [xs[1]], [16], outputs, _double_plus_one)
    side.synchronize()
    assert out is not None and torch.equal(out[0][:9], xs[1] * 2 + 1)
    # inside a capture the caller's launch is captured instead
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        assert graphs("a", [xs[1]], [16], outputs, _double_plus_one) is None


def _physical(transform: IdTransform, kjt: KeyedJaggedTensor, slots: bool, index_dtype: torch.dtype) -> Dict:
    if slots:
        entity = EntitySlots(bases=(("m0a", 0), ("m0b", 500), ("m1", 1000)), ones=2000)
        out, divisors, slot_values = transform.transform_with_slots(kjt, entity, index_dtype=index_dtype)
    else:
        out, divisors = transform(kjt, index_dtype=index_dtype)
        slot_values = None
    return {
        "keys": out.keys(),
        "values": out.values(),
        "lengths": out.lengths(),
        "weights": out.weights_or_none(),
        "length_per_key": out.length_per_key(),
        "offset_per_key": out.offset_per_key(),
        "divisors": divisors,
        "slots": slot_values,
    }


def _assert_same(got: Dict, want: Dict, what: str) -> None:
    for name, w in want.items():
        g = got[name]
        if isinstance(w, torch.Tensor):
            assert g is not None and g.dtype == w.dtype and torch.equal(g, w), f"{what}: {name} differs"
        else:
            assert g == w, f"{what}: {name} {g} != {w}"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "weighted, slots, index_dtype",
    [(False, False, torch.int64), (False, False, torch.int32), (True, False, torch.int64), (False, True, torch.int32)],
)
def test_replayed_transform_matches_its_launch(weighted: bool, slots: bool, index_dtype: torch.dtype) -> None:
    """MEmCom, QR, hash and stock tables (keys in another order, an extra key, empty bags, MEAN features), batches
    of several shapes in turn: every batch's physical KJT (values, lengths, weights, slots, bag sizes) is the launch's
    own, including a batch's outputs read after later batches have replayed the same graph."""
    module = CompressedEmbeddingBagCollection(_tables(weighted), is_weighted=weighted, device=CUDA)
    transform = module.id_transform
    assert transform.graphs is not None
    launched = copy.deepcopy(transform)
    launched.graphs = None
    ranges = id_ranges(module.embedding_bag_configs())
    kjts = [
        random_kjt(ranges, batch, torch.Generator().manual_seed(seed), weighted=weighted, extra_keys=["x"]).to(CUDA)
        for seed, batch in enumerate([32, 32, 48, 32, 48, 20])
    ]
    want = [_physical(launched, kjt, slots, index_dtype) for kjt in kjts]
    got: List[Tuple[int, Dict]] = []
    for _ in range(3):
        for i, kjt in enumerate(kjts):
            got.append((i, _physical(transform, kjt, slots, index_dtype)))
    assert transform.graphs.graphs, "no batch shape was replayed"
    torch.cuda.synchronize()
    for call, (i, g) in enumerate(got):
        _assert_same(g, want[i], f"call {call} (batch {i})")


@pytest.mark.gpu
@needs_cuda
def test_replayed_transform_still_checks_ids() -> None:
    """A bad id in a replayed batch raises at the next call, naming its table and feature and the range."""
    module = CompressedEmbeddingBagCollection(_tables(), device=CUDA)
    transform = module.id_transform
    kjt = random_kjt(id_ranges(module.embedding_bag_configs()), 32, torch.Generator().manual_seed(0)).to(CUDA)
    for _ in range(3):
        transform(kjt)
    assert transform.graphs is not None and transform.graphs.graphs
    keys = kjt.keys()
    at = keys.index("q0")
    start = sum(kjt.length_per_key()[:at])
    values = kjt.values().clone()
    values[start] = 300  # q0 has 300 ids
    bad = KeyedJaggedTensor(keys=keys, values=values, lengths=kjt.lengths())
    transform(bad)  # checked asynchronously: reported by the next call
    with pytest.raises(ValueError, match=r"table 'q0', feature 'q0': ids must lie in \[0, 300\), got values in"):
        transform(kjt)


def test_bucket_holds_and_pads_by_at_most_an_eighth() -> None:
    for n in list(range(1, 300)) + [2_621_440, 10**6 + 1]:
        b = bucket(n)
        assert n <= b <= max(n + n // 8, 15) and bucket(b) == b
