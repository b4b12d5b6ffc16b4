"""``rewardkit serve`` options: every check that needs no model fails before the model loads."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from rewardkit.cli import main


def serve(*args: str) -> int:
    return main(["serve", "--model", "/nonexistent", *args])  # loading it would fail differently


def test_bad_limits_are_reported_together(capsys):
    assert (
        serve("--max-queue", "4", "--max-conversations", "8", "--max-wait-ms", "-1", "--max-messages", "0")
        == 2
    )
    err = capsys.readouterr().err
    assert "--max-wait-ms must be >= 0, got -1.0" in err
    assert "--max-conversations (8) must not exceed --max-queue (4)" in err
    assert "--max-messages must be >= 1, got 0" in err


def test_busy_port_fails_at_once_before_the_model_loads(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        assert serve("--port", str(port)) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert "nonexistent" not in err  # the model was never tried


def test_api_key_file(tmp_path: Path, capsys):
    import argparse

    from rewardkit.server.command import api_key, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    args = parser.parse_args(["serve", "--api-key-file", str(key_file)])
    assert api_key(args) == "s3cret"
    assert serve("--api-key-file", str(tmp_path / "missing")) == 2
    assert "--api-key-file" in capsys.readouterr().err
    assert serve("--api-key", "a", "--api-key-file", str(key_file)) == 2
    assert "not both" in capsys.readouterr().err
    key_file.write_text("\n")
    assert serve("--api-key-file", str(key_file)) == 2
    assert "the API key is empty" in capsys.readouterr().err


def test_key_in_path_needs_a_key(capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REWARDKIT_API_KEY", raising=False)
    assert serve("--allow-key-in-path") == 2
    assert "--allow-key-in-path needs an API key" in capsys.readouterr().err
