# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Physical tables -> TorchRec's quantized ``EmbeddingBagCollection`` (FBGEMM ``IntNBitTableBatchedEmbeddingBags``).

The tables go through exactly the path ``torchrec.inference.modules.quantize_embeddings`` takes for a stock
``EmbeddingBagCollection``: a ``QuantConfig`` of placeholder observers on the float module, then
``torchrec.quant.embedding_modules.EmbeddingBagCollection.from_float`` (row-wise int8/int4 with an fp16 scale and
bias per row, or fp16/fp32 rows). Stock tables and compressed collections' physical tables are quantized alike.
"""

from typing import Dict, List, Sequence, Tuple

import torch
from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen
from torch.ao.quantization import PlaceholderObserver
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType, QuantConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.quant.embedding_modules import (
    EmbeddingBagCollection as QuantEmbeddingBagCollection,
)
from torchrec.quant.embedding_modules import (
    quant_prep_customize_row_alignment,
)

from torchrec_memcom.inference.config import InferenceConfig

__all__ = ["quantized_tables", "storage_bytes", "table_batched_modules"]


def table_batched_modules(qebc: QuantEmbeddingBagCollection) -> List[IntNBitTableBatchedEmbeddingBagsCodegen]:
    """The FBGEMM TBEs inside a quantized collection (TorchRec private ``_emb_modules``, checked on 1.6.1 and 1.8.0).

    TorchRec can register them as submodules instead (``register_tbes``), but then ``torch.export`` meets FBGEMM's
    TorchScript objects (prefetch counters) as module state and needs fake classes for them; unregistered, the
    TBEs' tensors are lifted into the program as constants.
    """
    return list(qebc._emb_modules)


def quantized_tables(
    tables: Sequence[Tuple[str, torch.Tensor, List[str]]], is_weighted: bool, config: InferenceConfig
) -> QuantEmbeddingBagCollection:
    """A quantized, SUM-pooled ``EmbeddingBagCollection`` of ``(name, (rows, dim) fp32 weight, feature names)``.

    Its state dict holds no table rows (they live in the TBEs' storage only; see ``storage_bytes``). Its TBEs run
    without FBGEMM's bounds check: the served module checks the logical ids itself
    (``InferenceConfig.check_ids``) and every id map lands inside its physical table by construction. (The check
    rewrites bad indices in place, an op AOTInductor cannot compile; TorchRec's serving sharders drop it too.)
    """
    configs = [
        EmbeddingBagConfig(
            name=name,
            num_embeddings=w.shape[0],
            embedding_dim=w.shape[1],
            feature_names=list(features),
            pooling=PoolingType.SUM,
        )
        for name, w, features in tables
    ]
    ebc = EmbeddingBagCollection(tables=configs, is_weighted=is_weighted, device=torch.device("meta"))
    ebc.to_empty(device="cpu")
    with torch.no_grad():
        for name, w, _ in tables:
            ebc.embedding_bags[name].weight.copy_(w)
    ebc.qconfig = QuantConfig(
        activation=PlaceholderObserver.with_args(dtype=torch.float),
        weight=PlaceholderObserver.with_args(dtype=config.torch_weight_dtype),
    )
    quant_prep_customize_row_alignment(ebc, [EmbeddingBagCollection], config.row_alignment)
    qebc = QuantEmbeddingBagCollection.from_float(ebc)
    for tbe in table_batched_modules(qebc):
        tbe.bounds_check_mode_int = BoundsCheckMode.NONE.value
    # TorchRec also registers each table's rows as a buffer viewing the TBE's storage (for state_dict); forward never
    # reads them, and an exported program would save them next to that storage, doubling the file.
    for bag in qebc.embedding_bags.values():
        for name, _ in list(bag.named_buffers(recurse=False)):
            delattr(bag, name)
    return qebc


def storage_bytes(qebc: QuantEmbeddingBagCollection) -> Dict[str, int]:
    """Bytes of a quantized collection: per table (its rows with scale/bias and row padding, as FBGEMM stores them)
    and ``total`` (the TBEs' host storage, alignment between tables included)."""
    out: Dict[str, int] = {}
    for tbe in table_batched_modules(qebc):
        names = [spec[0] for spec in tbe.embedding_specs]
        for name, (rows, _) in zip(names, tbe.split_embedding_weights(split_scale_shifts=False)):
            out[name] = rows.numel() * rows.element_size()
    out["total"] = sum(t.weights_host.numel() * t.weights_host.element_size() for t in table_batched_modules(qebc))
    return out
