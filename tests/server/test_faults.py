"""The fault table of docs/server.md, one test per row: the cases of bench/server_faults.py against
an in-process server on the tiny model, with the sizes scaled down together with the limits, and
the small request sent alongside every case (see `Probe`)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from rewardkit.api import RewardModel

BENCH = Path(__file__).resolve().parents[2] / "bench" / "server_faults.py"
# The small request's slowest answer during a case. Generous: a loaded 2-core CI machine; what the
# bound catches is a stall (the table's were a minute long), not a slow machine.
BOUND_S = 10.0


@pytest.fixture(scope="module")
def faults() -> ModuleType:
    spec = importlib.util.spec_from_file_location("server_faults", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(faults, serve):
    """``run(rm, case, **config)``: the case against a fresh server; asserts the expected answer
    and that the small request was answered all along."""

    def go(rm: RewardModel, case, **config):
        with serve(rm, **config) as srv:
            row = faults.run_case(srv.port, "case", "", case, BOUND_S)
        assert row.expected, (row.status, row.detail)
        assert row.probe_requests > 0 and row.under_bound, (row.probe_worst_s, row.probe_failures)
        return row

    return go


def test_huge_turn_is_413_before_it_is_read(run, faults, tiny_rm):
    row = run(tiny_rm, faults.huge_turn(faults.Sizes(huge_turn_words=200_000)), max_body_bytes=100_000)
    assert row.status == "413"


def test_long_turn_is_413_before_tokenization(run, faults, tiny_rm):
    row = run(tiny_rm, faults.long_turn(faults.Sizes(long_turn_chars=30_000)), max_conversation_chars=20_000)
    assert row.status == "413"


def test_truncation_left_many_turns(run, faults, tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=256, truncation="left")
    sizes = faults.Sizes(left_turns=(40, 80), left_ok_turns=12)  # 12 turns: about 1,400 tokens
    assert run(rm, faults.left_turns(sizes), max_messages=16).status == "413 / 413"
    assert run(rm, faults.left_truncated(sizes), max_messages=16).status == "200"


def test_classify_with_many_items_is_413_with_a_small_answer(run, faults, tiny_rm):
    run(tiny_rm, faults.classify_items(faults.Sizes(classify_items=20_000)), max_conversations=64)


def test_many_messages(run, faults, tiny_rm):
    sizes = faults.Sizes(many_conversations=64, many_messages=100, scored_messages=8)
    run(tiny_rm, faults.many_messages(sizes), max_body_bytes=100_000)
    run(tiny_rm, faults.many_scored(sizes), max_body_bytes=100_000)


def test_chunked_body_over_the_limit_is_413(run, faults, tiny_rm):
    run(tiny_rm, faults.chunked_body(faults.Sizes(chunked_bytes=60_000)), max_body_bytes=20_000)


def test_clients_that_leave_free_the_queue(run, faults, hooked_rm):
    """Four requests fill the queue of a slow engine (a request per batch, 0.5 s each) and their
    clients leave after 1 s: a live request is answered (not 429), and what was not yet in a batch
    is never scored."""
    rm = hooked_rm(lambda batch: time.sleep(0.5))
    sizes = faults.Sizes(disconnects=4, disconnect_conversations=16, disconnect_after=1.0)
    row = run(rm, faults.disconnects(sizes), max_queue=64, max_conversations=16, max_wait_ms=0)
    assert row.status == "live request after: 200"


@pytest.mark.parametrize("bodies", [("lone surrogate", "NaN"), ("invalid UTF-8", "deep nesting")])
def test_malformed_bodies_are_422_and_the_connection_lives(run, faults, tiny_rm, bodies):
    assert run(tiny_rm, faults.malformed(*bodies)).status == "422 ×10"


@pytest.mark.parametrize("names", [(), ("my-rm",)])
def test_no_filesystem_paths_in_answers(run, faults, tiny_rm, tiny_model_dir, names):
    row = run(tiny_rm, faults.no_paths(str(tiny_model_dir)), served_model_name=names)
    assert row.status == f"spec.model = {(names or (tiny_model_dir.name,))[0]!r}"


def test_unfinished_bodies_are_closed_after_the_read_timeout(run, faults, tiny_rm):
    row = run(tiny_rm, faults.unfinished(faults.Sizes(unfinished=50), 1.0), read_timeout=1.0)
    assert row.status == "408 ×50"
