"""Best-of-N selection and preference pairs from K scored responses per prompt.

`best_of_n_file` and `pairs_file` score a file of ``{"prompt", "responses"}`` records (each
record one shared-prompt group) into a resumable score file, then write their output atomically;
``rewardkit best-of-n`` and ``rewardkit pairs`` (`rewardkit.preferences.command`) call them.
`select_pairs` and `pair_row` are the pure steps that turn one group's rewards into pairs.
"""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "GroupsSummary": "rewardkit.preferences.files",
    "best_of_n_file": "rewardkit.preferences.files",
    "check_inputs": "rewardkit.preferences.files",
    "pairs_file": "rewardkit.preferences.files",
    "read_scored_groups": "rewardkit.preferences.files",
    "score_groups": "rewardkit.preferences.files",
    "Pair": "rewardkit.preferences.pairs",
    "PairOptions": "rewardkit.preferences.pairs",
    "group_pair_rows": "rewardkit.preferences.pairs",
    "pair_row": "rewardkit.preferences.pairs",
    "preference_strength": "rewardkit.preferences.pairs",
    "select_pairs": "rewardkit.preferences.pairs",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
