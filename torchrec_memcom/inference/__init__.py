# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Serving trained models small: gather a checkpoint, quantize every collection, export the whole model to one file.

- ``load_checkpoint``: a DCP checkpoint of any world size -> an unsharded model (``checkpoint.py``)
- ``InferenceConfig``: table precision (fp32 / fp16 / int8 / int4), MEmCom weight precision, id checks (``config.py``)
- ``to_inference``: a serving copy of a model, every embedding-bag collection -> ``InferenceEmbeddingBagCollection``
  (``convert.py``): id transform + ONE TorchRec quantized ``EmbeddingBagCollection`` of the physical tables +
  combine (``collection.py``), built from ``lower_collection`` (``_adapter.py``, the only reader of the training
  modules' internals) with the id maps of ``id_maps.py`` and TorchRec's quant path (``quantize.py``)
- ``export_model`` / ``load_program`` / ``compile_aoti``: ``torch.export`` of the whole model on the tensors of a KJT,
  saved to one file that runs with only ``torch`` and ``fbgemm_gpu`` (``export.py``)
- ``compare_latency``: per-request CPU latency of several programs, median and p99, interleaved (``bench.py``)
"""

from torchrec_memcom.inference._adapter import lower_collection
from torchrec_memcom.inference.bench import Latency, compare_latency
from torchrec_memcom.inference.checkpoint import load_checkpoint
from torchrec_memcom.inference.collection import InferenceEmbeddingBagCollection
from torchrec_memcom.inference.config import InferenceConfig
from torchrec_memcom.inference.convert import serve_collection, to_inference
from torchrec_memcom.inference.export import (
    KJTInputModel,
    compile_aoti,
    export_model,
    load_aoti,
    load_program,
    program_inputs,
)

__all__ = [
    "InferenceConfig",
    "InferenceEmbeddingBagCollection",
    "KJTInputModel",
    "Latency",
    "compile_aoti",
    "export_model",
    "load_aoti",
    "load_checkpoint",
    "load_program",
    "lower_collection",
    "compare_latency",
    "program_inputs",
    "serve_collection",
    "to_inference",
]
