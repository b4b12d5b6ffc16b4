"""Fixtures for server tests: real uvicorn servers on 127.0.0.1 around tiny models."""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from rewardkit.api import RewardModel
from rewardkit.server import BackgroundServer, ServerConfig, create_app

WORDS = [
    "the",
    "a",
    "reward",
    "model",
    "judges",
    "answers",
    "quickly",
    "slowly",
    "with",
    "care",
    "to",
    "math",
    "code",
    "poems",
    "42",
    "ok",
    "no",
    "yes",
]


def random_conversation(rng: random.Random) -> list[dict[str, str]]:
    """A short valid conversation: optional system, 1–2 user/assistant exchanges, last turn assistant."""

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))

    msgs = [{"role": "system", "content": text()}] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 2)):
        msgs += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
    return msgs


PostFn = Callable[[http.client.HTTPConnection, str, Any], tuple[int, dict[str, str], Any]]


def _post_json(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())


@pytest.fixture(scope="session")
def post_json() -> PostFn:
    """POST on a kept-alive stdlib connection → (status, lower-cased headers, JSON body).

    Load tests use the standard library rather than httpx's async pool, whose per-request cost
    grows with the number of open connections and would dominate the run time.
    """
    return _post_json


@pytest.fixture(scope="module")
def conversations() -> list[list[dict[str, str]]]:
    rng = random.Random(0)
    return [random_conversation(rng) for _ in range(120)]


@pytest.fixture(scope="module")
def offline(tiny_rm: RewardModel, conversations: list[list[dict[str, str]]]) -> list[float]:
    """Offline rewards of `conversations` (the reference every server answer is checked against)."""
    return tiny_rm.score(conversations)


ServeFn = Callable[..., AbstractContextManager[BackgroundServer]]


@pytest.fixture(scope="session")
def serve() -> ServeFn:
    """``with serve(rm, **config) as srv:`` — a real server on a free port."""

    @contextmanager
    def start(rm: RewardModel, **config: Any) -> Iterator[BackgroundServer]:
        with BackgroundServer(create_app(rm, ServerConfig(**config))) as srv:
            yield srv

    return start


@pytest.fixture(scope="module")
def server(serve: ServeFn, tiny_rm: RewardModel) -> Iterator[BackgroundServer]:
    """A shared server on the session's tiny model, default limits except a short batch wait."""
    with serve(tiny_rm, max_wait_ms=2.0, max_conversations=64, max_request_tokens=20_000) as srv:
        yield srv


@pytest.fixture(scope="session")
def served_name(tiny_model_dir: Path) -> str:
    """The name the tiny model is served under by default (its directory's, never its path)."""
    return tiny_model_dir.name


@pytest.fixture
def fresh_rm(tiny_model_dir: Path) -> RewardModel:
    """A private copy of the tiny model (its own batcher state, not shared with other tests)."""
    return RewardModel.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spinning
    threads slow them down many times over; restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
