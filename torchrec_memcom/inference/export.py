# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Whole-model artifacts: ``torch.export`` of a served model on the tensors a KJT is built from, in one file.

The program's inputs are ``(values, lengths, dense)`` (plus ``weights`` for weighted models): the KJT's keys are
fixed at export time (saved in the file), ``lengths`` is ``(F * B,)`` feature-major as in ``KeyedJaggedTensor``, and
the batch size ``B`` and the number of ids are dynamic (``B >= 1``); ids and lengths are int64, the dense features
and weights fp32 (``program_inputs`` converts a KJT). This is how TorchRec exports its quantized
collections (``KJTInputExportWrapper`` + non-strict ``torch.export``, ``torchrec/distributed/tests/test_pt2.py``);
``torchrec.ir`` instead swaps the collections out for placeholders that need TorchRec to rebuild them on load.

The saved file runs in a process that imports only ``torch`` and ``fbgemm_gpu`` (whose operators the program
calls)::

    import torch, fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
    program = torch.export.load("dlrm_int8.pt2").module()
    logits = program(values, lengths, dense)

``compile_aoti`` turns the same program into an AOTInductor package (a compiled shared library plus weights, one
file) loaded with ``torch._inductor.aoti_load_package``: same inputs, no Python per operator.
"""

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx.experimental._config as fx_config
from torch import nn
from torch.export import Dim, ExportedProgram
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

__all__ = [
    "METADATA_FILE",
    "KJTInputModel",
    "compile_aoti",
    "export_model",
    "load_aoti",
    "load_program",
    "program_inputs",
]

METADATA_FILE = "torchrec_memcom.json"
_FORMAT_VERSION = 1
_DEBUG_META = ("stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "from_node")


class KJTInputModel(nn.Module):
    """Runs ``model`` on the tensors of a KJT with fixed ``keys``: ``forward(values, lengths, dense[, weights])``.

    Args:
        model (nn.Module): takes ``(dense, kjt)`` (``dense_first``, as ``torchrec.models.dlrm.DLRM``) or
            ``(kjt, dense)`` (as the two-tower model).
        keys (Sequence[str]): the KJT's keys, in the order of ``lengths``.
        dense_first (bool): argument order of ``model``.
    """

    def __init__(self, model: nn.Module, keys: Sequence[str], dense_first: bool = True) -> None:
        super().__init__()
        if len(set(keys)) != len(keys) or not keys:
            raise ValueError(f"KJT keys must be non-empty and unique, got {list(keys)}")
        self.model = model
        self.keys = list(keys)
        self.dense_first = dense_first

    def forward(
        self,
        values: torch.Tensor,
        lengths: torch.Tensor,
        dense: torch.Tensor,
        weights: Optional[torch.Tensor] = None,
    ) -> Any:
        kjt = KeyedJaggedTensor(keys=self.keys, values=values, lengths=lengths, weights=weights)
        return self.model(dense, kjt) if self.dense_first else self.model(kjt, dense)


def _example(num_keys: int, dense_dim: int, weighted: bool, batch: int = 2) -> Tuple[torch.Tensor, ...]:
    values = torch.zeros(num_keys * batch, dtype=torch.int64)
    lengths = torch.ones(num_keys * batch, dtype=torch.int64)
    dense = torch.zeros(batch, dense_dim)
    return (values, lengths, dense, torch.ones(values.shape)) if weighted else (values, lengths, dense)


def export_model(
    model: nn.Module,
    keys: Sequence[str],
    dense_dim: int,
    path: Optional[str | os.PathLike] = None,
    *,
    dense_first: bool = True,
    weighted: bool = False,
    metadata: Optional[Dict[str, Any]] = None,
    debug_info: bool = False,
) -> ExportedProgram:
    """``torch.export`` of ``model`` (a served model, see ``to_inference``) on KJT tensors; saved to ``path`` if given.

    Args:
        model (nn.Module): the model; exported in eval mode without gradients.
        keys (Sequence[str]): the KJT's keys, in the order of ``lengths``.
        dense_dim (int): width of the dense features.
        path (Optional[str]): where to save the program (``torch.export.save``), with the keys, input names and
            ``metadata`` in the file's ``torchrec_memcom.json``.
        dense_first (bool): ``model(dense, kjt)`` (DLRM) or ``model(kjt, dense)``.
        weighted (bool): the KJT carries per-id weights (a fourth input).
        metadata (Optional[Dict[str, Any]]): JSON-ready extras to store (e.g. the inference config, bytes).
        debug_info (bool): keep each node's stack trace and module provenance; dropped by default, which leaves
            the program unchanged and the file about 3x smaller (``torch.export.unflatten`` needs them).

    Returns:
        the ``ExportedProgram``; ``program.module()(values, lengths, dense[, weights])`` runs it.
    """
    wrapper = KJTInputModel(model, keys, dense_first).eval()
    example = _example(len(keys), dense_dim, weighted)
    batch = Dim("batch", min=1, max=1 << 20)
    num_values = Dim("num_values", min=0, max=1 << 30)
    # (1 * batch would be a derived dim distinct from batch, which export then cannot relate to the dense batch)
    lengths = batch if len(keys) == 1 else len(keys) * batch
    shapes: Dict[str, Any] = {"values": {0: num_values}, "lengths": {0: lengths}, "dense": {0: batch}}
    if weighted:
        shapes["weights"] = {0: num_values}
    # size-oblivious: no 0/1 specialisation, so one program serves batch 1 as well as batch 4096
    with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(wrapper, example, dynamic_shapes=shapes, strict=False)
    if not debug_info:
        for node in program.graph.nodes:
            for key in _DEBUG_META:
                node.meta.pop(key, None)
    if path is not None:
        meta = {
            "format_version": _FORMAT_VERSION,
            "keys": list(keys),
            "dense_dim": dense_dim,
            "inputs": ["values", "lengths", "dense"] + (["weights"] if weighted else []),
            "dtypes": {"values": "int64", "lengths": "int64", "dense": "float32", "weights": "float32"},
            **(metadata or {}),
        }
        torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(meta)})
    return program


def load_program(path: str | os.PathLike) -> Tuple[Callable[..., Any], Dict[str, Any]]:
    """``(callable, metadata)`` of a file saved by ``export_model``: the program's module and its
    ``torchrec_memcom.json`` (keys, input names, extras)."""
    extra = {METADATA_FILE: ""}
    program = torch.export.load(path, extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{os.fspath(path)}: no {METADATA_FILE} inside; not written by export_model")
    return program.module(), json.loads(extra[METADATA_FILE])


def load_aoti(path: str | os.PathLike) -> Callable[..., Any]:
    """The runner of an AOTInductor package written by ``compile_aoti`` (same inputs as the program)."""
    return torch._inductor.aoti_load_package(os.fspath(path))


def compile_aoti(program: ExportedProgram, path: str | os.PathLike) -> str:
    """Compiles ``program`` with AOTInductor into one package file at ``path`` (needs a C++ compiler here, none at
    load time); returns the path."""
    return torch._inductor.aoti_compile_and_package(program, package_path=os.fspath(path))


def program_inputs(
    kjt: KeyedJaggedTensor, keys: List[str], dense: torch.Tensor, weighted: bool = False
) -> Tuple[torch.Tensor, ...]:
    """The program inputs of a KJT (permuted to ``keys``) and dense features, in the program's dtypes (int64 ids
    and lengths, fp32 dense features and weights)."""
    if kjt.keys() != keys:
        kjt = kjt.permute([kjt.keys().index(k) for k in keys])
    values, lengths = kjt.values().to(torch.int64), kjt.lengths().to(torch.int64)
    inputs: Tuple[torch.Tensor, ...] = (values, lengths, dense.to(torch.float32))
    return inputs + (kjt.weights().to(torch.float32),) if weighted else inputs
