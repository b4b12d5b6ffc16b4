"""A fingerprint of a checkpoint's weights, so that an output can tell which weights wrote it.

Hashing every byte of a 61 GiB checkpoint would cost a minute on each load. Instead each
safetensors file contributes its name, size, header (tensor names, shapes, dtypes, offsets) and
16 evenly spaced 64 KiB samples of its data: weights retrained or replaced in place (same
config, same header) differ in the sampled bytes with overwhelming probability, while copies of
one checkpoint under different paths agree.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLES = 16
SAMPLE_BYTES = 1 << 16


def checkpoint_dir(name: str, revision: str | None = None) -> Path | None:
    """The local directory holding a checkpoint: ``name`` itself, or the hub cache's snapshot
    (``None`` when it cannot be found without the network)."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name, revision=revision, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]
            )
        )
    except Exception as e:  # any failure only means: no fingerprint
        log.debug("no local snapshot of %s to fingerprint: %s", name, e)
        return None


def _file_digest(h: hashlib._Hash, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}:".encode())
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h.update(f.read(n))
        data_start = 8 + n
        span = max(size - data_start - SAMPLE_BYTES, 0)
        for k in range(SAMPLES):
            f.seek(data_start + span * k // (SAMPLES - 1))
            h.update(f.read(SAMPLE_BYTES))


def weights_fingerprint(name: str, revision: str | None = None) -> str | None:
    """16 hex digits identifying the checkpoint's safetensors weights, or ``None`` if none are
    found locally."""
    directory = checkpoint_dir(name, revision)
    files = sorted(directory.glob("*.safetensors")) if directory is not None else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        _file_digest(h, f)
    return h.hexdigest()[:16]
