"""`rewardkit.distributed`: ranks from the environment, devices, the process group, --devices."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from rewardkit.distributed import (
    Rank,
    join,
    leave,
    parse_devices,
    process_group,
    rank_from_env,
    resolve_device,
)
from rewardkit.errors import ConfigError


def test_rank_env_and_devices() -> None:
    assert rank_from_env({}) is None
    r = rank_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (r.rank, r.world_size, r.local_rank, r.is_main) == (3, 4, 1, False)
    with pytest.raises(ConfigError, match="RANK=4 is outside WORLD_SIZE=4"):
        rank_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert parse_devices("all", 4) == [0, 1, 2, 3]
    assert parse_devices("2, 0", 4) == [2, 0]
    with pytest.raises(ConfigError, match=r"--devices 0,5: this machine has 4 GPU\(s\) \(0-3\); 5 do not"):
        parse_devices("0,5", 4)
    with pytest.raises(ConfigError, match="--devices lists a GPU twice"):
        parse_devices("1,1", 4)
    with pytest.raises(ConfigError, match="--devices must be 'all' or GPU indices"):
        parse_devices("gpu0", 4)
    with pytest.raises(ConfigError, match="--devices all: no CUDA GPU is visible"):
        parse_devices("all", 0)


def test_device_option() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")


def test_device_of_a_rank() -> None:
    two = Rank(rank=1, world_size=2, local_rank=1)
    want = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto", two) == want
    assert resolve_device("cpu", two) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda:3 cannot be combined with torchrun or --devices"):
        resolve_device("cuda:3", two)


def test_a_process_alone_joins_a_world_of_one() -> None:
    assert not dist.is_initialized()
    with process_group("cpu") as group:
        assert (group.rank, group.world_size, group.is_main, group.owned) == (0, 1, True, True)
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        inner = join("cpu")  # a group already joined is used as it is, and left open
        assert not inner.owned
        leave(inner)
        assert dist.is_initialized()
    assert not dist.is_initialized()
