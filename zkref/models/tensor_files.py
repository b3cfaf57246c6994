"""Float tensors from .safetensors files (weights or activations given on the command line); never unpickled."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_FILE_BYTES = 8 << 30
"""A tensor file larger than this is refused before it is opened (a LoRA module's tensors are far smaller)."""


def load_safetensors(path: str | Path, keys: list[str]) -> list[np.ndarray]:
    """Read float tensors `keys` from a .safetensors file as float64; ValueError on anything unusable."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{p}: {p.stat().st_size:,} bytes is more than the {MAX_FILE_BYTES:,} this reads")
    arrays: list[np.ndarray] = []
    try:
        with safe_open(str(p), framework="numpy") as f:
            available = sorted(f.keys())
            missing = [k for k in keys if k not in available]
            if missing:
                raise ValueError(f"{p}: missing key(s) {', '.join(missing)}; the file has {', '.join(available) or 'none'}")
            for k in keys:
                try:
                    arrays.append(np.asarray(f.get_tensor(k)))
                except (TypeError, ValueError, SafetensorError):  # e.g. bfloat16, which numpy cannot hold
                    arrays.append(_read_with_torch(p, k))
    except SafetensorError as exc:
        raise ValueError(f"{p}: not a readable safetensors file ({exc})") from None
    for k, arr in zip(keys, arrays):
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{p}: {k} has dtype {arr.dtype}, expected numbers")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{p}: {k} contains NaN or infinity")
    return [a.astype(np.float64) for a in arrays]


def _read_with_torch(path: Path, key: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key).float().numpy()
