"""Benchmark metrics against hand-worked examples."""

from __future__ import annotations

import pytest

from rewardkit.eval.metrics import (
    INCOMPLETE,
    REWARDBENCH_SECTIONS,
    helpsteer3_metrics,
    judgebench_category,
    judgebench_metrics,
    rewardbench_metrics,
    rm_bench_difficulty,
    rm_bench_matrix,
    rm_bench_metrics,
)


def rm_row(domain: str, chosen: list[float], rejected: list[float]) -> dict:
    return {"id": "x", "domain": domain, "reward_chosen": chosen, "reward_rejected": rejected}


# Prompt A: chosen [3, 2, 1] vs rejected [2, 2, 0]:
#   row 0 (3): 3>2 3>2 3>0 → 1 1 1;  row 1 (2): 2>2 tie → 0, 0, 1;  row 2 (1): 0 0 1.
# Prompt B: chosen [1, 1, 1] vs rejected [0, 5, 0] → every row 1 0 1.
PROMPT_A = ([3.0, 2.0, 1.0], [2.0, 2.0, 0.0])
PROMPT_B = ([1.0, 1.0, 1.0], [0.0, 5.0, 0.0])


def test_rm_bench_matrix_strict_ties_wrong() -> None:
    m = rm_bench_matrix([rm_row("chat", *PROMPT_A), rm_row("chat", *PROMPT_B)])
    assert m == [[1.0, 0.5, 1.0], [0.5, 0.0, 1.0], [0.5, 0.0, 1.0]]
    d = rm_bench_difficulty(m)
    # Hard: above the diagonal (0,1) (0,2) (1,2) = (0.5 + 1 + 1)/3; Normal: (1 + 0 + 1)/3;
    # Easy: below (1,0) (2,0) (2,1) = (0.5 + 0.5 + 0)/3.
    assert d["hard"] == pytest.approx(2.5 / 3)
    assert d["normal"] == pytest.approx(2 / 3)
    assert d["easy"] == pytest.approx(1 / 3)


def test_rm_bench_domain_mean_vs_pooled_and_safety_pooled() -> None:
    # chat: prompt A only. safety: B (refuse) + B (response), pooled into one safety domain.
    rows = [
        rm_row("chat", *PROMPT_A),
        rm_row("safety-refuse", *PROMPT_B),
        rm_row("safety-response", *PROMPT_B),
        rm_row("code", [1.0] * 3, [0.0] * 3),  # all 9 cells right
        rm_row("math", [0.0] * 3, [0.0] * 3),  # all ties: all wrong
    ]
    res = rm_bench_metrics(rows)
    # chat (A alone): [[1,1,1],[0,0,1],[0,0,1]] → 5/9; safety (B twice): [[1,0,1]]*3 → 6/9.
    assert res.table["Chat"] == pytest.approx(100 * 5 / 9)
    assert res.table["Safety"] == pytest.approx(100 * 6 / 9)
    assert res.table["Code"] == pytest.approx(100.0)
    assert res.table["Math"] == pytest.approx(0.0)
    assert res.table["Overall"] == pytest.approx(100 * (5 / 9 + 6 / 9 + 1 + 0) / 4)
    assert res.counts["per_domain"] == {"chat": 1, "math": 1, "code": 1, "safety": 2}
    # Hard per domain: chat (1+1+1)/3=1, safety (0+1+1)/3, code 1, math 0 → mean over domains.
    assert res.table["Hard"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert not res.warnings and not res.marks

    # Easy per domain: chat 0, safety (1 + 1 + 0)/3, code 1, math 0.
    assert res.table["Easy"] == pytest.approx(100 * (0 + 2 / 3 + 1 + 0) / 4)

    pooled = rm_bench_metrics(rows, difficulty_agg="pooled")
    # One matrix over the 5 prompts: cell (0,1) is right for A and code only → 2/5;
    # cells (0,2) and (1,2) are right for all but math → 4/5. Hard = (2/5 + 4/5 + 4/5)/3.
    assert pooled.table["Hard"] == pytest.approx(100 * (0.4 + 0.8 + 0.8) / 3)
    # Easy: cells (1,0) and (2,0) are right for B, B and code → 3/5; (2,1) for code only → 1/5.
    # Pooling weighs safety's two prompts twice, so it differs from the domain mean (5/12).
    assert pooled.table["Easy"] == pytest.approx(100 * 7 / 15)
    assert pooled.table["Overall"] == pytest.approx(res.table["Overall"])  # Overall stays a domain mean


def test_rm_bench_missing_domain_is_loud() -> None:
    rows = [
        rm_row("chat", *PROMPT_A),
        rm_row("code", [1.0] * 3, [0.0] * 3),
        rm_row("safety-refuse", *PROMPT_B),
    ]
    res = rm_bench_metrics(rows)
    assert res.table["Math"] is None
    assert res.counts["missing_domains"] == ["math"]
    assert res.table["Overall"] == pytest.approx(100 * (5 / 9 + 1 + 6 / 9) / 3)
    assert {res.marks[c] for c in ("Easy", "Normal", "Hard", "Overall")} == {INCOMPLETE}
    assert "Chat" not in res.marks
    (w,) = res.warnings
    assert "math MISSING" in w and "NOT comparable" in w


def test_rm_bench_rejects_bad_agg() -> None:
    with pytest.raises(ValueError, match="difficulty_agg"):
        rm_bench_metrics([], difficulty_agg="mean")  # type: ignore[arg-type]


def jb_row(source: str, label: str, a: float, b: float) -> dict:
    return {"pair_id": "p", "source": source, "label": label, "reward_A": a, "reward_B": b}


def test_judgebench_micro_overall_and_ties_wrong() -> None:
    rows = [
        jb_row("mmlu-pro-law", "A>B", 2, 1),  # right
        jb_row("mmlu-pro-math", "B>A", 2, 1),  # wrong
        jb_row("mmlu-pro-law", "A>B", 1, 1),  # tie: wrong
        jb_row("mmlu-pro-law", "B>A", 1, 1),  # tie: wrong (not counted as B)
        jb_row("livebench-reasoning", "B>A", 0, 3),  # right
        jb_row("livebench-math", "A>B", 5, 4),  # right
        jb_row("livecodebench", "B>A", 5, 4),  # wrong
    ]
    res = judgebench_metrics(rows)
    assert res.table == {
        "Knowl.": pytest.approx(25.0),
        "Reason.": pytest.approx(100.0),
        "Math": pytest.approx(100.0),
        "Code": pytest.approx(0.0),
        "Overall": pytest.approx(100 * 3 / 7),  # micro: 3 right of 7 pairs
    }
    assert res.details["macro_mean"] == pytest.approx(56.25)  # the mean of categories differs
    assert res.counts["ties"] == 2
    assert any("2 pair(s) scored a tie" in w for w in res.warnings)


def test_judgebench_categories_and_absent() -> None:
    assert judgebench_category("mmlu-pro-computer science") == "Knowledge"
    assert judgebench_category("livebench-reasoning") == "Reasoning"
    assert judgebench_category("livecodebench") == "Code"
    assert judgebench_category("gsm8k") is None
    res = judgebench_metrics([jb_row("mmlu-pro-law", "A>B", 1, 0), jb_row("gsm8k", "A>B", 0, 1)])
    assert res.table["Reason."] is None and res.table["Overall"] == pytest.approx(50.0)
    assert res.marks["Overall"] == INCOMPLETE
    assert any("Reasoning, Math, Code have no pairs" in w for w in res.warnings)
    assert any("gsm8k" in w for w in res.warnings)


def hs_row(domain: str, pref: int, s1: float, s2: float) -> dict:
    return {"id": 0, "domain": domain, "overall_preference": pref, "reward_1": s1, "reward_2": s2}


def test_helpsteer3_sign_rule_excluded_zero_and_breakdowns() -> None:
    rows = [
        hs_row("general", -2, 1.0, 0.0),  # response 1 better, scored higher: right
        hs_row("general", 3, 1.0, 0.0),  # response 2 better, scored lower: wrong
        hs_row("code", 1, 0.0, 0.5),  # right
        hs_row("code", -1, 0.3, 0.3),  # tie: wrong
        hs_row("stem", 0, 0.0, 9.0),  # preference 0: excluded
    ]
    res = helpsteer3_metrics(rows)
    assert res.counts["excluded_ties"] == 1 and res.counts["pairs"] == 4 and res.counts["correct"] == 2
    assert res.table["Overall"] == pytest.approx(50.0)
    assert res.table["General"] == pytest.approx(50.0)
    assert res.table["Code"] == pytest.approx(50.0)
    assert res.table["STEM"] is None  # its only row was a 0 preference
    assert res.table["|1|"] == pytest.approx(50.0)
    assert res.table["|2|"] == pytest.approx(100.0)
    assert res.table["|3|"] == pytest.approx(0.0)
    assert res.counts["score_ties"] == 1


def rb_row(subset: str, c: float, r: float) -> dict:
    return {"id": 0, "subset": subset, "reward_chosen": c, "reward_rejected": r}


def test_rewardbench_weighted_sections() -> None:
    rows = (
        [rb_row("alpacaeval-easy", 1, 0)] * 2  # acc 1.0, weight 100
        + [rb_row("mt-bench-easy", 0, 1), rb_row("mt-bench-easy", 1, 1)]  # acc 0 (tie wrong), weight 28
        + [rb_row("alpacaeval-length", 1, 0)]  # 1.0, w 95
        + [rb_row("alpacaeval-hard", 0, 1)]  # 0, w 95
        + [rb_row("mt-bench-med", 1, 0)]  # 1.0, w 40
        + [rb_row(s, 1, 0) for s in ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor")]
        + [rb_row(s, 1, 0) for s in ("llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual")]
        + [rb_row(s, 0, 1) for s in ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse")]
        + [rb_row("xstest-should-respond", 1, 0), rb_row("donotanswer", 1, 0)]
        + [rb_row("math-prm", 1, 0)]
        + [rb_row(f"hep-{x}", 0, 1) for x in ("cpp", "go", "java", "js", "python", "rust")]
    )
    res = rewardbench_metrics(rows)
    chat = 100 * (100 + 95 + 40) / (100 + 95 + 95 + 28 + 40)
    # xstest-should-refuse (wrong) weighs 154, xstest-should-respond (right) 250.
    safety = 100 * (250 + 136) / (100 + 100 + 154 + 250 + 136)
    reasoning = 100 * 984 / (984 + 6 * 164)
    assert res.table["Chat"] == pytest.approx(chat)
    assert res.table["Chat Hard"] == pytest.approx(100.0)
    assert res.table["Safety"] == pytest.approx(safety)
    assert res.table["Reasoning"] == pytest.approx(reasoning)  # 50.0: math-prm weighs as all of code
    assert res.table["Score"] == pytest.approx((chat + 100 + safety + reasoning) / 4)
    assert not res.warnings and not res.marks


def test_rewardbench_missing_subset_marked() -> None:
    res = rewardbench_metrics([rb_row("alpacaeval-easy", 1, 0), rb_row("not-a-subset", 1, 0)])
    assert res.table["Chat"] == pytest.approx(100.0)
    assert res.table["Safety"] is None
    assert res.marks["Chat"] == INCOMPLETE and res.marks["Score"] == INCOMPLETE
    assert res.table["Score"] == pytest.approx(100.0)
    assert any("MISSING" in w and "alpacaeval-length" in w for w in res.warnings)
    assert any("not-a-subset" in w for w in res.warnings)


# The worked example of allenai/reward-bench's README ("Getting Leaderboard Section Scores",
# PKU-Alignment/beaver-7b-v1.0-cost) as (right, pairs) per subset at the subsets' real sizes:
# each fraction equals the README's accuracy exactly (e.g. xstest-should-respond 0.284 = 71/250).
OFFICIAL_EXAMPLE = {
    "alpacaeval-easy": (50, 100),
    "alpacaeval-hard": (67, 95),
    "alpacaeval-length": (56, 95),
    "donotanswer": (112, 136),
    "hep-cpp": (103, 164),
    "hep-go": (104, 164),
    "hep-java": (116, 164),
    "hep-js": (109, 164),
    "hep-python": (90, 164),
    "hep-rust": (106, 164),
    "llmbar-adver-GPTInst": (36, 92),
    "llmbar-adver-GPTOut": (22, 47),
    "llmbar-adver-manual": (17, 46),
    "llmbar-adver-neighbor": (58, 134),
    "llmbar-natural": (52, 100),
    "math-prm": (132, 447),
    "mt-bench-easy": (16, 28),
    "mt-bench-hard": (20, 37),
    "mt-bench-med": (29, 40),
    "refusals-dangerous": (97, 100),
    "refusals-offensive": (100, 100),
    "xstest-should-refuse": (154, 154),
    "xstest-should-respond": (71, 250),
}
# What the official code computes on these accuracies: `calculate_scores_per_section` with the
# EXAMPLE_COUNTS and SUBSET_MAPPING of allenai/reward-bench at 05a9005 (2026-01-31) for the
# sections, and the leaderboard's masked average with weights 2, 2, 2, 2 (Prior Sets absent) of
# analysis/get_benchmark_results.py for Score; run on the README's numbers, in percent.
OFFICIAL_SECTIONS = {
    "Chat": 60.893854748603346,
    "Chat Hard": 44.95614035087719,
    "Safety": 72.16216216216216,
    "Reasoning": 46.675669776831995,
}
OFFICIAL_SCORE = 56.17195675961868
# The same with prior sets anthropic_helpful 0.61, anthropic_hhh 161/221, shp 0.55, summarize
# 0.6 (weights 2, 2, 2, 2, 1; Prior Sets = their plain mean), and with anthropic_hhh absent.
PRIOR = {"anthropic_helpful": (61, 100), "anthropic_hhh": (161, 221), "shp": (11, 20), "summarize": (3, 5)}
OFFICIAL_PRIOR, OFFICIAL_SCORE_WITH_PRIOR = 62.212669683257914, 56.84314708446748
OFFICIAL_PRIOR_NO_HHH, OFFICIAL_SCORE_NO_HHH = 58.66666666666668, 56.449146749290676


def subset_rows(counts: dict[str, tuple[int, int]]) -> list[dict]:
    return [
        rb_row(s, 1, 0) if i < right else rb_row(s, 0, 1)
        for s, (right, n) in counts.items()
        for i in range(n)
    ]


def test_rewardbench_official_worked_example() -> None:
    res = rewardbench_metrics(subset_rows(OFFICIAL_EXAMPLE))
    assert res.details["subset_accuracy"]["xstest-should-respond"] == pytest.approx(28.4)
    for section, value in OFFICIAL_SECTIONS.items():
        assert res.table[section] == pytest.approx(value, abs=1e-9), section
    assert res.table["Score"] == pytest.approx(OFFICIAL_SCORE, abs=1e-9)
    assert res.columns == ("Chat", "Chat Hard", "Safety", "Reasoning", "Score")
    assert not res.marks and not res.warnings and res.counts["pairs"] == 2985


def test_rewardbench_prior_sets_weigh_half_a_section() -> None:
    res = rewardbench_metrics(subset_rows({**OFFICIAL_EXAMPLE, **PRIOR}))
    assert res.columns == ("Chat", "Chat Hard", "Safety", "Reasoning", "Prior Sets", "Score")
    assert res.table["Prior Sets"] == pytest.approx(OFFICIAL_PRIOR, abs=1e-9)
    assert res.table["Score"] == pytest.approx(OFFICIAL_SCORE_WITH_PRIOR, abs=1e-9)
    assert res.table["Safety"] == pytest.approx(OFFICIAL_SECTIONS["Safety"], abs=1e-9)
    assert not res.marks and not res.warnings

    no_hhh = {k: v for k, v in PRIOR.items() if k != "anthropic_hhh"}
    other = {"mtbench_human": (1, 2)}  # a prior set the leaderboard does not average
    res = rewardbench_metrics(subset_rows({**OFFICIAL_EXAMPLE, **no_hhh, **other}))
    assert res.table["Prior Sets"] == pytest.approx(OFFICIAL_PRIOR_NO_HHH, abs=1e-9)
    assert res.table["Score"] == pytest.approx(OFFICIAL_SCORE_NO_HHH, abs=1e-9)
    assert res.marks == {"Prior Sets": INCOMPLETE, "Score": INCOMPLETE}
    assert any("anthropic_hhh MISSING" in w for w in res.warnings)
    assert any("['mtbench_human'] are reported per subset but are not part of" in w for w in res.warnings)
    assert res.details["subset_accuracy"]["mtbench_human"] == pytest.approx(50.0)


def test_rewardbench_missing_section_is_marked_not_zero() -> None:
    no_safety = {k: v for k, v in OFFICIAL_EXAMPLE.items() if k not in REWARDBENCH_SECTIONS["Safety"]}
    res = rewardbench_metrics(subset_rows(no_safety))
    assert res.table["Safety"] is None and res.marks["Safety"] == INCOMPLETE
    # Score over the three sections present (the official function would put 0 for Safety).
    rest = [OFFICIAL_SECTIONS[s] for s in ("Chat", "Chat Hard", "Reasoning")]
    assert res.table["Score"] == pytest.approx(sum(rest) / 3, abs=1e-9)
    assert res.marks["Score"] == INCOMPLETE
    assert any("Safety have no pairs and are left out of Score" in w and "0" in w for w in res.warnings)


def test_helpsteer3_missing_domain_marks_overall() -> None:
    full = [hs_row(d, 1, 0.0, 1.0) for d in ("general", "stem", "code", "multilingual")]
    assert not helpsteer3_metrics(full).marks and not helpsteer3_metrics(full).warnings
    res = helpsteer3_metrics(full[:2])
    assert res.marks == {"Overall": INCOMPLETE} and res.table["Code"] is None
    assert any("code, multilingual have no pairs" in w and "NOT comparable" in w for w in res.warnings)
