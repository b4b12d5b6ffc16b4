"""Report rendering: the model card's table layout."""

from __future__ import annotations

from rewardkit.eval.metrics import rewardbench_metrics
from rewardkit.eval.report import make_report, table_markdown


def rb_report(label: str, subsets: list[str]) -> dict:
    rows = [
        {"id": i, "subset": s, "reward_chosen": 1.0, "reward_rejected": 0.0} for i, s in enumerate(subsets)
    ]
    return make_report(
        result=rewardbench_metrics(rows),
        title="RewardBench",
        label=label,
        spec=None,
        data={},
        options={},
        scoring=None,
        scores_file="s.jsonl",
    )


def test_runs_with_different_columns_share_one_table() -> None:
    plain = rb_report("a|b", ["alpacaeval-easy"])
    prior = rb_report("p", ["alpacaeval-easy", "shp"])
    header, rule, row_a, row_p = table_markdown([plain, prior]).splitlines()
    assert header == "| Model | Chat | Chat Hard | Safety | Reasoning | Prior Sets | Score |"
    assert rule.count("|") == header.count("|") == row_a.count("|") - 1  # the label's escaped pipe
    assert row_a.startswith("| a\\|b | 100.0† | — | — | — | — | 100.0† |")
    assert row_p.endswith("| — | 100.0† | 100.0† |")  # Prior Sets over shp alone
