# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""``to_inference(model, config)``: a serving copy of a trained model, every embedding-bag collection replaced by its
``InferenceEmbeddingBagCollection``."""

import copy
from typing import Callable, List, Optional, Tuple

from torch import nn

from torchrec_memcom.inference._adapter import is_collection, lower_collection
from torchrec_memcom.inference.collection import InferenceEmbeddingBagCollection
from torchrec_memcom.inference.config import InferenceConfig

__all__ = ["replace_collections", "serve_collection", "to_inference"]


def serve_collection(
    collection: nn.Module, config: Optional[InferenceConfig] = None
) -> InferenceEmbeddingBagCollection:
    """The serving form of one trained, unsharded collection (stock ``EmbeddingBagCollection`` or ours)."""
    return InferenceEmbeddingBagCollection(lower_collection(collection), config or InferenceConfig())


def _collections(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Outermost lowerable collections of ``model`` by FQN; raises on sharded modules."""
    found: List[Tuple[str, nn.Module]] = []
    for fqn, module in model.named_modules():
        if type(module).__module__.startswith("torchrec.distributed"):
            raise TypeError(
                f"'{fqn or type(module).__name__}' is a sharded {type(module).__name__}: serve an unsharded model "
                "(build it on CPU and load the checkpoint with torchrec_memcom.inference.load_checkpoint)"
            )
        if any(prefix == "" or fqn.startswith(prefix + ".") for prefix, _ in found):
            continue
        if is_collection(module):
            found.append((fqn, module))
    return found


def replace_collections(model: nn.Module, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """A copy of ``model`` whose outermost embedding-bag collections are replaced by ``make(collection)``; the rest
    is deep-copied and ``model`` is left as it is.

    Raises:
        TypeError: the model holds sharded modules.
        ValueError: the model holds no embedding-bag collection.
    """
    if is_collection(model):
        return make(model)
    found = _collections(model)
    if not found:
        raise ValueError(f"{type(model).__name__} holds no embedding-bag collection to serve")
    # The copy shares the old collections (memo) instead of copying them, then swaps in the replacements.
    out = copy.deepcopy(model, memo={id(m): m for _, m in found})
    for fqn, module in found:
        parent_name, _, child = fqn.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, make(module))
    return out


def to_inference(model: nn.Module, config: Optional[InferenceConfig] = None) -> nn.Module:
    """A copy of ``model`` for serving, in eval mode; ``model`` itself is left as it is.

    Every outermost embedding-bag collection (stock ``EmbeddingBagCollection``, ``CompressedEmbeddingBagCollection``
    or a per-method collection) becomes an ``InferenceEmbeddingBagCollection`` with its physical tables quantized
    as ``config`` says; the dense layers are copied unchanged (fp32). A collection passed directly is converted
    itself.

    Args:
        model (nn.Module): a trained, unsharded model (e.g. ``torchrec.models.dlrm.DLRM``).
        config (Optional[InferenceConfig]): precision and checks; default int8 tables, fp16 MEmCom weights.

    Raises:
        TypeError: the model holds sharded modules.
        ValueError: the model holds no embedding-bag collection, or a table has no serving form.

    Example::

        served = to_inference(trained_dlrm, InferenceConfig(weight_dtype="int8"))
        logits = served(dense_features, kjt)
    """
    config = config or InferenceConfig()
    return replace_collections(model, lambda collection: serve_collection(collection, config)).eval()
