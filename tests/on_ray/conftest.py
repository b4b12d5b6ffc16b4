"""Input files shared by the Ray tests: every record kind, valid and invalid."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

ATOL = 1e-5  # fp32 on the CPU; the same engine, batched differently (see test_parity.py)
U = {"role": "user", "content": "What is 2+3?"}
S = {"role": "system", "content": "Answer briefly."}


def _conversations(n: int) -> list[str]:
    """``n`` JSONL lines of conversation records of varied lengths (some without an id), with
    invalid lines among them: malformed JSON, a wrong last role, a pair, a blank line."""
    lines = []
    for i in range(n):
        answer = f"2+3={5 + i % 3}" + " Let me explain." * (i % 7)
        rec: dict[str, object] = {"messages": [S, U, {"role": "assistant", "content": answer}]}
        if i % 5:
            rec = {"id": f"c{i}", **rec}
        if i % 9 == 4:
            rec = {"id": i, "prompt": "Say hi" + "!" * i, "response": "Hi."}
        lines.append(json.dumps(rec, ensure_ascii=False))
    bad = [
        '{"id": "broken", "messages": [',
        json.dumps({"id": "last-user", "messages": [U]}),
        json.dumps({"id": "a-pair", "prompt": "q", "chosen": "a", "rejected": "b"}),
        "",
    ]
    for j, line in enumerate(bad):
        lines.insert(3 + j * (n // 5), line)
    return lines


def _pairs(n: int) -> list[dict[str, object]]:
    """``n`` preference pairs (chosen/rejected), two of them invalid (an empty response, no prompt
    turn before the response)."""
    out: list[dict[str, object]] = []
    for i in range(n):
        out.append(
            {
                "id": f"p{i}",
                "prompt": [S, {"role": "user", "content": f"What is {i}+1?" + " Think." * (i % 4)}],
                "chosen": f"{i}+1={i + 1}",
                "rejected": f"{i}+1={i + 2}" + " I think." * (i % 3),
            }
        )
    out[3]["rejected"] = ""
    out[7]["prompt"] = [S]
    return out


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def conversation_lines() -> Callable[[int], list[str]]:
    """``conversation_lines(n)``: JSONL lines of conversation records with invalid ones among them."""
    return _conversations


@pytest.fixture(scope="session")
def pair_records() -> Callable[[int], list[dict[str, object]]]:
    """``pair_records(n)``: chosen/rejected pairs, records 3 and 7 invalid."""
    return _pairs


@pytest.fixture(scope="session")
def write_jsonl() -> Callable[[Path, list[str]], Path]:
    return _write_jsonl


@pytest.fixture(scope="session")
def read_jsonl() -> Callable[[Path], list[dict[str, object]]]:
    return _read_jsonl


def _assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Rows equal to ``rewardkit score``'s: ids, token counts, columns and their order exactly,
    rewards within ATOL."""

    def reward(k: str) -> bool:
        return k.startswith("reward") or k == "p_first_better"

    assert [{k: v for k, v in r.items() if not reward(k)} for r in got] == [
        {k: v for k, v in r.items() if not reward(k)} for r in want
    ]
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for k in filter(reward, w):
            assert g[k] == pytest.approx(w[k], abs=ATOL), (g["id"], k)


@pytest.fixture(scope="session")
def assert_same_rows() -> Callable[[list[dict], list[dict]], None]:
    return _assert_same_rows
