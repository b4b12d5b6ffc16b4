"""Scoring on a real local Ray cluster (2 CPUs, the demo model, 2 replicas): a replica killed in
the middle of a run, the ``--on-error`` contract, and the rows and ``.meta.json`` of
``rewardkit score``. One cluster for the module: starting Ray takes seconds."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.api import ModelOptions
from rewardkit.cli import main
from rewardkit.demo import DEMO_MODEL_DIR
from rewardkit.scoring.files import score_file

ray = pytest.importorskip("ray")
from rewardkit.ray import score_file_ray  # noqa: E402 (needs ray)

DEMO = ModelOptions(model=str(DEMO_MODEL_DIR), device="cpu")
SCORER = b"MapBatches(RewardScorer)"  # in the process title Ray gives each scoring actor


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # "local": always a new cluster of our own, never one another process started here. Workers
    # at this process's priority: Ray's default niceness (15) starves them on a busy machine.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 << 20,
        _system_config={"worker_niceness": 0},
    )
    yield
    ray.shutdown()


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _ours(pid: int) -> bool:
    """Whether ``pid`` descends from this test process (its Ray cluster's workers do)."""
    me = os.getpid()
    try:
        while pid > 1:
            pid = _ppid(pid)
            if pid == me:
                return True
    except OSError:
        return False
    return False


def scorer_pids(*, running: bool = False) -> set[int]:
    """This cluster's scoring actors (with ``running``: those running a batch now)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if SCORER in title and (not running or b".submit" in title) and _ours(int(entry)):
            pids.add(int(entry))
    return pids


class ReplicaKiller:
    """Kills a scoring actor busy with a batch when the first rows arrive (SIGKILL: no cleanup),
    and notes every scoring actor process seen meanwhile."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.killed: int | None = None
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.seen |= scorer_pids()

    def on_rows(self, records: int, tokens: int) -> None:
        if self.killed is not None:
            return
        deadline = time.monotonic() + 60
        while not (busy := scorer_pids(running=True)):
            assert time.monotonic() < deadline, "no scoring actor ran a batch"
            time.sleep(0.02)
        self.killed = min(busy)
        self.seen |= busy
        os.kill(self.killed, signal.SIGKILL)

    def __enter__(self) -> ReplicaKiller:
        self._watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watch.join()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the actors' processes in /proc")
def test_a_killed_replica_is_restarted_and_every_row_comes_once(
    cluster: None,
    tmp_path: Path,
    pair_records: Callable,
    read_jsonl: Callable,
    assert_same_rows: Callable,
) -> None:
    recs = pair_records(60)
    for r in recs[::4]:
        del r["id"]  # rows without an id take their row number
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=25)
    score_file(DEMO.load(), path, tmp_path / "ref.jsonl", on_error="skip")
    out = tmp_path / "out.jsonl"
    with ReplicaKiller() as killer:
        summary = score_file_ray(
            DEMO,
            str(path),
            str(out),
            replicas=2,
            batch_size=4,
            on_error="skip",
            quiet=True,
            progress=killer.on_rows,
        )
    # 1. A replica was killed mid-run and Ray started its process again: 2 replicas + 1 restart.
    assert killer.killed is not None and not Path(f"/proc/{killer.killed}").exists()
    assert len(killer.seen) >= 3, killer.seen
    # 2. Every valid record has exactly one row, in input order, with rewardkit score's rewards
    #    (a pair's two responses scored as one shared-prompt group).
    want = read_jsonl(tmp_path / "ref.jsonl")
    assert_same_rows(read_jsonl(out), want)
    assert (summary.rows, summary.skipped) == (len(want), 2)
    # 3. The same list of skipped records and provenance; nothing partial left behind.
    assert read_jsonl(tmp_path / "out.jsonl.errors.jsonl") == read_jsonl(tmp_path / "ref.jsonl.errors.jsonl")
    assert (tmp_path / "out.jsonl.meta.json").read_text() == (tmp_path / "ref.jsonl.meta.json").read_text()
    assert not (tmp_path / "out.jsonl.partial").exists()


def _error_lines(err: str, path: Path) -> list[str]:
    """The listed errors (``  FILE:LINE: ...``) in a command's stderr."""
    return [line.strip() for line in err.splitlines() if line.startswith(f"  {path}:")]


def test_cli_invalid_records_fail_with_every_one_listed_and_nothing_written(
    cluster: None,
    tmp_path: Path,
    conversation_lines: Callable,
    write_jsonl: Callable,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", conversation_lines(40))
    assert main(["score", str(path), "-o", str(tmp_path / "ref.jsonl"), "--device", "cpu"]) == 2
    want = _error_lines(capsys.readouterr().err, path)
    assert len(want) == 3

    out = tmp_path / "out.jsonl"
    assert main(["score", str(path), "-o", str(out), "--ray", "--replicas", "2", "--device", "cpu"]) == 2
    assert _error_lines(capsys.readouterr().err, path) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
