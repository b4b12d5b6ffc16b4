"""Shared fixtures: tiny random reward models made in-process (never downloaded)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel, Scored
from rewardkit.engine.batching import PackedBatch
from rewardkit.engine.engine import Forward, ScoringEngine
from rewardkit.models.templating import Encoded
from rewardkit.models.tiny import byte_tokenizer, save_tiny_reward_model, tiny_causal_lm

# Tiny models gain nothing from intra-op threads; on a busy 2-core machine OpenMP spin-waiting
# makes them about 10x slower.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2.5"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2ForSequenceClassification + byte tokenizer + ChatML template on disk."""
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def tp_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 with 8 query and 4 key/value heads: 4 and 2 per rank of two (several of each,
    so a buffer sized for the global head count cannot line up by broadcasting)."""
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-qwen2-tp"), seed=3, heads=8, kv_heads=4)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=1)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2ForCausalLM (no reward head) with the byte tokenizer and ChatML: a base
    model to train into a reward model, or a policy to train with RL."""
    out = tmp_path_factory.mktemp("tiny-lm")
    tok = byte_tokenizer()
    tiny_causal_lm(vocab_size=len(tok), max_positions=512).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_rm(tiny_model_dir: Path) -> RewardModel:
    """The tiny model loaded on CPU in fp32 (shared: do not mutate)."""
    return RewardModel.load(tiny_model_dir, device="cpu")


class BeforePacked:
    """A `Forward` test double: calls ``before(batch)`` ahead of each packed forward (which may
    raise, e.g. a simulated out-of-memory, or sleep), and records the batch sizes it saw."""

    def __init__(self, inner: Forward, before: Callable[[PackedBatch], None]) -> None:
        self.inner, self.before, self.calls = inner, before, []

    def packed(self, batch: PackedBatch) -> torch.Tensor:
        self.calls.append(int(batch.cu_seqlens.numel()) - 1)
        self.before(batch)
        return self.inner.packed(batch)

    def long(self, ids: Sequence[int]) -> torch.Tensor:
        return self.inner.long(ids)


HookedEngine = Callable[..., ScoringEngine]


@pytest.fixture
def hooked_engine() -> HookedEngine:
    """``hooked_engine(model, before, token_budget=...)``: an engine whose packed forwards run
    through `BeforePacked` (its ``forward`` attribute)."""

    def make(
        model: torch.nn.Module, before: Callable[[PackedBatch], None], **kwargs: object
    ) -> ScoringEngine:
        return ScoringEngine(model, wrap_forward=lambda inner: BeforePacked(inner, before), **kwargs)

    return make


@pytest.fixture
def hooked_rm(tiny_model_dir: Path, hooked_engine: HookedEngine) -> Callable[..., RewardModel]:
    """``hooked_rm(before)``: a private copy of the tiny model whose engine calls ``before(batch)``
    ahead of each packed forward."""

    def make(before: Callable[[PackedBatch], None]) -> RewardModel:
        rm = RewardModel.load(tiny_model_dir, device="cpu")
        engine = hooked_engine(rm.model, before, token_budget=rm.engine.token_budget)
        return RewardModel(model=rm.model, chat=rm.chat, engine=engine, spec=rm.spec)

    return make


class RecordingModel(RewardModel):
    """A `RewardModel` test double: scores as the model it wraps, recording the group sizes of each
    engine call (``None`` for a call without groups) in ``calls``."""

    def __init__(self, rm: RewardModel) -> None:
        super().__init__(model=rm.model, chat=rm.chat, engine=rm.engine, spec=rm.spec)
        self.calls: list[list[int] | None] = []

    def score_encoded(self, encoded: Sequence[Encoded], *, group_sizes=None, progress=None) -> list[Scored]:
        self.calls.append(None if group_sizes is None else list(group_sizes))
        return super().score_encoded(encoded, group_sizes=group_sizes, progress=progress)


@pytest.fixture
def recording_rm(tiny_rm: RewardModel) -> RecordingModel:
    """The tiny model as a `RecordingModel` (a fresh record per test)."""
    return RecordingModel(tiny_rm)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """The real Qwen2.5 tokenizer from ../shared (tests using it skip when it is absent)."""
    if not (QWEN_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip("../shared/tokenizers/qwen2.5 not available")
    return QWEN_TOKENIZER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_bounded(
    cmd: Sequence[str], *, timeout: float, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` in its own session; on timeout stops its process group and fails, instead of
    waiting forever on pipes that its children hold open."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}  # tiny models: threads only contend
    with subprocess.Popen(
        list(cmd),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # torchrun stops its ranks (own sessions) on SIGTERM
            try:
                err = proc.communicate(timeout=30)[1]
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                err = "(killed)"
            pytest.fail(f"{' '.join(cmd[:6])} ... did not finish in {timeout} s; stderr:\n{err[-4000:]}")
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def torchrun(nproc: int) -> list[str]:
    """A torchrun command line: static rendezvous on a free 127.0.0.1 port (no host lookups)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    return [*launcher, "--master-addr", "127.0.0.1", "--master-port", str(free_port())]


@pytest.fixture(scope="session")
def run_command() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_bounded`: a subprocess with a hard time limit."""
    return run_bounded


@pytest.fixture(scope="session")
def torchrun_cmd() -> Callable[[int], list[str]]:
    """`torchrun`: the command prefix for an N-process job on this machine."""
    return torchrun


@pytest.fixture(scope="session")
def free_port_fn() -> Callable[[], int]:
    """`free_port`: a free TCP port on 127.0.0.1 (for a server started as a process)."""
    return free_port
