# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""One drop-in for a model's ``EmbeddingBagCollection``: any mix of stock and compressed tables, one lookup."""

import json
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from torchrec_memcom.configs import physical_dim
from torchrec_memcom.lsh import Batch
from torchrec_memcom.memory import MemoryReport, tensor_bytes
from torchrec_memcom.modules.method import Segment, TableMethod, method_for_config
from torchrec_memcom.modules.transform import IdTransform

__all__ = ["CompressedEmbeddingBagCollection", "init_table"]


def init_table(weight: torch.Tensor, config: EmbeddingBagConfig) -> None:
    """Initialises one table with its config's ``init_fn`` unless it lives on ``meta``."""
    if weight.is_meta:
        return
    assert config.init_fn is not None
    with torch.no_grad():
        config.init_fn(weight)


class CompressedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """A model's tables, each stock or compressed, behind the ``EmbeddingBagCollection`` interface.

    Every table's memory lives in *physical* tables of one stock ``EmbeddingBagCollection``
    (``_embedding_bag_collection``): stock tables as they are, MEmCom / hashing-trick shared tables, QR's quotient and
    remainder tables, LMA memories. One id transform (``id_transform``, a single fused kernel on CUDA) maps the input
    KJT to the physical features, one lookup pools them, and a cheap combine turns them into the logical features::

        KJT (logical ids) -> id_transform -> KJT (physical ids) -> [MEmCom: rows and w[s] weights]
            -> EmbeddingBagCollection (physical tables) -> combine -> KeyedTensor (logical features)

    So it drops into ``torchrec.models.dlrm.DLRM(embedding_bag_collection=...)``, and its sharded form has one input
    dist and one output dist for all tables, exactly like a stock ``EmbeddingBagCollection``. The methods come from
    the registry (``modules.method``): a plain ``EmbeddingBagConfig`` stays stock.

    Args:
        tables (Sequence[EmbeddingBagConfig]): any mix of the registered table configs; table and feature names
            must be unique.
        is_weighted (bool): whether input KJTs carry per-id weights (float32).
        device (Optional[torch.device]): where to allocate; ``meta`` defers allocation (then ``reset_parameters``).

    Example::

        tables = [
            MEmComEmbeddingBagConfig(name="t1", num_embeddings=1000, embedding_dim=8, feature_names=["f1"],
                                     compression_ratio=4.0),
            EmbeddingBagConfig(name="t2", num_embeddings=10, embedding_dim=8, feature_names=["f2"]),
        ]
        ebc = CompressedEmbeddingBagCollection(tables)
        #        0       1
        # f1   [1, 2]   [3]
        # f2   [4]      []
        kjt = KeyedJaggedTensor.from_lengths_sync(["f1", "f2"], torch.tensor([1, 2, 3, 4]), torch.tensor([2, 1, 1, 0]))
        ebc(kjt).keys(), ebc(kjt).values().shape  # ['f1', 'f2'], (2, 16)
    """

    # Config types a subclass accepts (None: every registered type).
    _config_types: ClassVar[Optional[Tuple[Type[EmbeddingBagConfig], ...]]] = None

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        is_weighted: bool = False,
        device: Optional[torch.device | str] = None,
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        if not tables:
            raise ValueError(f"{kind} needs at least one table")
        names: set = set()
        feature_owner: Dict[str, str] = {}
        for t in tables:
            if self._config_types is not None and type(t) not in self._config_types:
                allowed = ", ".join(c.__name__ for c in self._config_types)
                raise TypeError(f"{kind} takes {allowed}; table '{t.name}' is a {type(t).__name__}")
            if t.name in names:
                raise ValueError(f"Duplicate table name {t.name}")
            names.add(t.name)
            for f in t.feature_names:
                if f in feature_owner:
                    raise ValueError(f"feature '{f}' is used by tables '{feature_owner[f]}' and '{t.name}'")
                feature_owner[f] = t.name
        self._embedding_bag_configs: List[EmbeddingBagConfig] = list(tables)
        self._is_weighted = is_weighted
        self._device = torch.device(device) if device is not None else torch.device("cpu")

        by_type: Dict[Type[TableMethod], List[EmbeddingBagConfig]] = {}
        for t in tables:
            by_type.setdefault(method_for_config(t), []).append(t)
        self._methods: Dict[str, TableMethod] = {cls.name: cls(cfgs) for cls, cfgs in by_type.items()}
        self._method_of: Dict[str, TableMethod] = {t.name: m for m in self._methods.values() for t in m.tables}
        self._table_of_feature: Dict[str, str] = dict(feature_owner)

        feature_tables = [(f, t) for t in tables for f in t.feature_names]
        position = {f: i for i, (f, _) in enumerate(feature_tables)}
        by_feature: Dict[str, List[Segment]] = {}
        combines = {}
        physical: List[EmbeddingBagConfig] = []
        for m in self._methods.values():
            for s in m.segments():
                by_feature.setdefault(s.feature, []).append(s)
            for c in m.combines():
                combines[c.feature] = c
            physical += m.physical_tables()
        segments = [s for f, _ in feature_tables for s in by_feature[f]]
        feature_of = {s.name: s.feature for s in segments}
        # Physical tables in the order of the logical features they serve, so the pooled output is in logical order.
        physical.sort(key=lambda c: min(position[feature_of[f]] for f in c.feature_names))
        self._physical_configs = physical
        self.uses_entity_weights = any(m.uses_entity_weights for m in self._methods.values())
        self._embedding_bag_collection = EmbeddingBagCollection(
            tables=physical, is_weighted=is_weighted or self.uses_entity_weights, device=device
        )
        self.id_transform = IdTransform(
            feature_tables,
            {t.name: self._method_of[t.name] for t in tables},
            segments,
            [combines[f] for f, _ in feature_tables],
            is_weighted=is_weighted,
            out_weighted=is_weighted,
            physical_order=[f for c in physical for f in c.feature_names],
        )
        # Tables narrower than their output: a learned base_dim x d projection each (dense, data parallel).
        self._projected = [t for t in tables if physical_dim(t) < t.embedding_dim]
        if self._projected:
            self.projections = nn.ParameterDict(
                {
                    t.name: nn.Parameter(torch.empty(physical_dim(t), t.embedding_dim, device=device))
                    for t in self._projected
                }
            )
        for m in self._methods.values():
            state = m.transform_state(device)
            if state is not None:
                assert m.transform_state_name is not None
                self.id_transform.add_module(m.transform_state_name, state)
            state = m.module_state(device)
            if state is not None:
                assert m.module_state_name is not None
                self.register_module(m.module_state_name, state)
        self.reset_parameters()

    # -- the EmbeddingBagCollectionInterface -------------------------------------------------------------------------

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._embedding_bag_configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    @property
    def device(self) -> torch.device:
        return self._device

    def feature_names(self) -> List[str]:
        """Output keys, in order."""
        return self.id_transform.feature_names()

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """KJT in; KeyedTensor with every table's features, in table order, out."""
        kjt, divisors = self.id_transform(features)
        if self.uses_entity_weights:
            kjt = self._with_entity_weights(kjt)
        return self.id_transform.combine(self._embedding_bag_collection(kjt), divisors, self.output_projections())

    def output_projections(self) -> Optional[nn.ParameterDict]:
        """The ``base_dim x d`` projections of the tables narrower than their output (``None`` if there are none)."""
        return self.projections if self._projected else None

    def _with_entity_weights(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Unsharded form of what a sharded rank does after its input dist: the rows of MEmCom's scrambled ids, and
        per-sample weights ``w[s] (* x)`` (weight 1, or ``x``, for every other feature)."""
        values = kjt.values()
        weights = kjt.weights_or_none()
        rows: List[torch.Tensor] = []
        parts: List[torch.Tensor] = []
        segments = {s.name: s for s in self.id_transform.segments()}
        for key, (lo, hi) in zip(kjt.keys(), _ranges(kjt.length_per_key())):
            seg = segments[key]
            x = values[lo:hi]
            w = weights[lo:hi] if weights is not None else torch.ones(hi - lo, device=values.device)
            method = self._method_of[self._table_of_feature[seg.feature]]
            if method.uses_entity_weights:
                r, ew = method.rows_and_weights(self, seg, x)  # type: ignore[attr-defined]
                x, w = r, ew * w
            rows.append(x)
            parts.append(w)
        return KeyedJaggedTensor(
            keys=kjt.keys(),
            values=torch.cat(rows) if rows else values,
            lengths=kjt.lengths(),
            weights=torch.cat(parts) if parts else values.new_zeros(0, dtype=torch.float32),
            stride=kjt.stride(),
            length_per_key=kjt.length_per_key(),
            offset_per_key=kjt.offset_per_key(),
        )

    # -- state -------------------------------------------------------------------------------------------------------

    def methods(self) -> Dict[str, TableMethod]:
        """The methods of this collection's tables, by method name."""
        return dict(self._methods)

    def method_of(self, table: str) -> TableMethod:
        """The method of logical table ``table``."""
        try:
            return self._method_of[table]
        except KeyError:
            raise KeyError(f"no table '{table}' (tables: {list(self._method_of)})") from None

    def physical_table_configs(self) -> List[EmbeddingBagConfig]:
        """The physical tables (what the planner and the sharded lookups see)."""
        return list(self._physical_configs)

    def physical_weight(self, name: str) -> nn.Parameter:
        """Weight of physical table ``name``."""
        return self._embedding_bag_collection.embedding_bags[name].weight

    def reset_parameters(self) -> None:
        """(Re)initialises every physical table from its config and every method's state; a no-op on ``meta``."""
        for c in self._physical_configs:
            init_table(self.physical_weight(c.name), c)
        for m in self._methods.values():
            m.reset_state(self)
        for t in self._projected:
            p = self.projections[t.name]
            if not p.is_meta:  # orthonormal rows: the projection keeps the rows' scale
                nn.init.orthogonal_(p)

    def memory_report(self) -> MemoryReport:
        """Bytes per table by component, and the compression ratio against stock fp32 tables."""
        rows = [r for m in self._methods.values() for r in m.memory_rows(self)]
        for t in self._projected:
            row = next(r for r in rows if t.name in r.tables)
            row.components["projection"] = row.components.get("projection", 0) + tensor_bytes(self.projections[t.name])
        position = {t.name: i for i, t in enumerate(self._embedding_bag_configs)}
        # rows in table order (a shared memory at its first member)
        return MemoryReport(sorted(rows, key=lambda r: min(position[t] for t in r.tables)))

    def fingerprint(self) -> Dict[str, Dict[str, Any]]:
        """Per table, what a checkpoint must agree with (method, sizes, hash parameters)."""
        return fingerprint_of(self._methods.values(), self._embedding_bag_configs)

    def get_extra_state(self) -> str:
        """The tables' description, as JSON (one string: checkpoint formats keep it whole)."""
        return fingerprint_json(self.fingerprint())

    def set_extra_state(self, state: Any) -> None:
        check_fingerprint(state, self.fingerprint())

    def fit_signatures(
        self, batches: Iterable[Batch], max_rows: Optional[int] = None, progress: bool = False
    ) -> Dict[str, float]:
        """Fits data-dependent state (LMA signatures) from training rows (KJTs or ``(kjt, labels)`` pairs);
        returns per-table coverage."""
        out: Dict[str, float] = {}
        for m in self._methods.values():
            out.update(m.fit(self, batches, max_rows, progress))
        return out

    def signature_coverage(self) -> Dict[str, float]:
        """Per LMA table, the share of ids with a fitted signature (the rest take hashed locations)."""
        return signature_coverage_of(self._methods.values(), self.id_transform)

    # -- per-method accessors ----------------------------------------------------------------------------------------

    def _call(self, table: str, name: str, *args: Any) -> Any:
        method = self.method_of(table)
        fn = getattr(method, name, None)
        if fn is None:
            raise TypeError(f"table '{table}' is a {method.name} table, which has no {name}()")
        return fn(self, table, *args)

    def bucketed_hash(self, table: str) -> Any:
        """The ``hashing.BucketedHash`` of a MEmCom or hashing-trick table."""
        return self._call(table, "bucketed_hash")

    def shared_weight(self, table: str) -> nn.Parameter:
        """The shared table ``U`` of a MEmCom or hashing-trick table."""
        return self._call(table, "shared_weight")

    def entity_weight(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """MEmCom's ``w`` of raw ids."""
        return self._call(table, "entity_weight", ids)

    def num_remainder_rows(self, table: str) -> int:
        """QR's ``c``."""
        return self._call(table, "num_remainder_rows")

    def table_signatures(self, table: str) -> torch.Tensor:
        """LMA signatures of ``table``."""
        return self._call(table, "table_signatures")

    def set_signatures(self, table: str, signatures: torch.Tensor) -> None:
        """Loads LMA signatures of ``table``."""
        self._call(table, "set_signatures", signatures)

    def locations(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """LMA memory rows of each chunk of ``ids`` of ``table``."""
        return self._call(table, "locations", ids)

    def memory_weight(self, group: str) -> nn.Parameter:
        """The memory of an LMA group (or of the table of that name)."""
        for m in self._methods.values():
            fn = getattr(m, "memory_weight", None)
            if fn is not None and group in m.groups():  # type: ignore[attr-defined]
                return fn(self, group)
        raise KeyError(f"no LMA memory group '{group}'")


def fingerprint_of(methods: Iterable[TableMethod], tables: Sequence[EmbeddingBagConfig]) -> Dict[str, Dict[str, Any]]:
    """Per table (in order), its method's fingerprint."""
    method_of = {t.name: m for m in methods for t in m.tables}
    return {t.name: method_of[t.name].fingerprint(t) for t in tables}


def signature_coverage_of(methods: Iterable[TableMethod], transform: nn.Module) -> Dict[str, float]:
    """Per table of the methods that fit signatures, the share of its ids that have one."""
    out: Dict[str, float] = {}
    for m in methods:
        fn = getattr(m, "signature_coverage_of", None)
        if fn is not None:
            out.update(fn(transform.signatures))
    return out


def fingerprint_json(tables: Dict[str, Dict[str, Any]]) -> str:
    return json.dumps({"tables": tables}, sort_keys=True)


def check_fingerprint(saved: Any, own: Dict[str, Dict[str, Any]]) -> None:
    """Raises ``ValueError`` naming the table and field where a checkpoint's tables differ from the model's."""
    try:
        tables = json.loads(saved)["tables"]
    except (TypeError, ValueError, KeyError):
        raise ValueError(f"the checkpoint's table description is missing or unreadable: {saved!r}") from None
    own = json.loads(fingerprint_json(own))["tables"]  # compare like with like (tuples become lists)
    missing = sorted(set(own) - set(tables))
    extra = sorted(set(tables) - set(own))
    if missing or extra:
        raise ValueError(
            f"the checkpoint's tables differ from the model's: missing from the checkpoint {missing}, "
            f"only in the checkpoint {extra}"
        )
    for name, fields in own.items():
        theirs = tables[name]
        for key in sorted(set(fields) | set(theirs)):
            if fields.get(key) != theirs.get(key):
                raise ValueError(
                    f"table '{name}': the checkpoint has {key}={theirs.get(key)!r}, the model has "
                    f"{key}={fields.get(key)!r}; loading it would give other embeddings (rebuild the model with the "
                    "checkpoint's settings)"
                )


def _ranges(lengths: Sequence[int]) -> List[Tuple[int, int]]:
    out, acc = [], 0
    for n in lengths:
        out.append((acc, acc + n))
        acc += n
    return out
