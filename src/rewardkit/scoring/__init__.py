"""Scoring files of records into resumable outputs: in one process (`score_file`), as one rank of a
data-parallel job (`score_file_on_ranks`), or with a model sharded over the ranks
(`run_tensor_parallel`). ``rewardkit score`` (`rewardkit.scoring.command`) calls these."""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "InvalidInputError": "rewardkit.scoring.files",
    "ScoreSummary": "rewardkit.scoring.files",
    "merge_score_parts": "rewardkit.scoring.files",
    "output_row": "rewardkit.scoring.rows",
    "record_conversations": "rewardkit.scoring.rows",
    "score_file": "rewardkit.scoring.files",
    "score_file_sharded": "rewardkit.scoring.files",
    "run_tensor_parallel": "rewardkit.scoring.jobs",
    "score_file_on_ranks": "rewardkit.scoring.jobs",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
