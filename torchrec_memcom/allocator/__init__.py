# Copyright (c) 2026, the torchrec-memcom authors. BSD 3-Clause License.
"""Byte-budget allocation across embedding tables: per table a method, dimension and ratio (the SCMA problem).

Given tables (ids, model dim, features, id counts from a data sample) and a byte budget, choose for every table one
option (keep stock; stock at a smaller ``d``; hashing, QR, MEmCom or LMA at some ratio, optionally at a smaller base
``d``) so that the summed quality loss is smallest and the bytes fit: a multiple-choice knapsack, solved exactly
(``solve_knapsack``). The loss of an option comes either from

- ``FrequencyModel`` (cheap, no training): the traffic-weighted share of each id's signal an option keeps, from the
  id frequencies and the option's rows (``propose``), or
- measured sensitivities: one table varied at a time from a baseline through a user-supplied
  ``evaluate(tables_spec) -> validation metric`` (``measure_losses`` / ``propose_measured``; cached). The measured
  proposal is then trained as a whole beside the best uniform allocations and the best of them by ``evaluate`` is
  returned, since the knapsack's additive losses cannot see how tables' choices interact.

Options and proposals are the recipes' ``tables:`` section: ``{feature: {type: ..., compression: ..., ...}}`` as
``torchrec_memcom.tables.table_config`` takes it, plus ``embedding_dim: d'`` for a table narrower than the model's
``d`` (see ``build_config``: the core must support that key, with a ``d' x d`` up-projection where the model needs
one width). Bytes always come from the built configs' ``memory_report()`` (on ``meta``), never from formulas here.
"""

from torchrec_memcom.allocator.knapsack import solve_knapsack
from torchrec_memcom.allocator.model import FrequencyModel
from torchrec_memcom.allocator.options import (
    DEFAULT_RATIOS,
    METHODS,
    TableInfo,
    build_config,
    candidate_specs,
    fp32_projection_bytes,
    option_bytes,
    parse_budget,
)
from torchrec_memcom.allocator.search import Allocation, EvaluationCache, measure_losses, propose, propose_measured

__all__ = [
    "Allocation",
    "DEFAULT_RATIOS",
    "EvaluationCache",
    "FrequencyModel",
    "METHODS",
    "TableInfo",
    "build_config",
    "candidate_specs",
    "fp32_projection_bytes",
    "measure_losses",
    "option_bytes",
    "parse_budget",
    "propose",
    "propose_measured",
    "solve_knapsack",
]
