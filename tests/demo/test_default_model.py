"""Without --model, the CLI scores with the shipped demo model and says so on stderr."""

from __future__ import annotations

import json

from rewardkit.cli import main
from rewardkit.demo import DEMO_MODEL_DIR, DEMO_NOTICE


def test_score_without_model_uses_demo(capsys):
    rc = main(["score", "--prompt", "What is 1+1?", "--response", "1+1=2", "--response", "1+1=3"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert DEMO_NOTICE in err
    right, wrong = (json.loads(line)["reward"] for line in out.splitlines())
    assert right > wrong


def test_explicit_model_prints_no_notice(capsys):
    rc = main(["score", "--model", str(DEMO_MODEL_DIR), "--prompt", "Hi", "--response", "Hello!"])
    _, err = capsys.readouterr()
    assert rc == 0
    assert DEMO_NOTICE not in err
