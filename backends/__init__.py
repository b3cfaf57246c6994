"""Pluggable proving backends for the LoRA statement: the zkref mock backend and EZKL (real Halo2/KZG proofs).

`get_backend("zkref" | "ezkl")` returns a `backends.base.Backend`; the EZKL module is imported only when asked for.
"""
from __future__ import annotations

from backends.base import AdapterAnchor, Backend, Proof, ProofResult, Support, Verdict

BACKENDS = ("zkref", "ezkl")

__all__ = ["BACKENDS", "AdapterAnchor", "Backend", "Proof", "ProofResult", "Support", "Verdict", "get_backend"]


def get_backend(name: str, **options) -> Backend:
    """The backend called `name`; options go to its constructor (e.g. the EZKL backend's cache directory or SRS)."""
    if name == "zkref":
        from backends.zkref_backend import ZkrefBackend

        return ZkrefBackend(**options)
    if name == "ezkl":
        from backends.ezkl.backend import EzklBackend

        return EzklBackend(**options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
