"""The EZKL backend: the LoRA statement as an ONNX graph proven with EZKL 23 (Halo2, KZG on BN254).

Modules: `graph` (the ONNX formulation whose witness equals zkref's integers), `settings` (pinned run arguments and
the layout choice), `instances` (canonical instances ↔ EZKL's), `cache` (SRS files, circuits and keys),
`batch` (several statements as one graph), `cost` (EZKL's rows and k predicted without running it),
`backend` (`EzklBackend`). Spec: specs/ezkl-backend.md.
"""
from backends.ezkl.backend import EzklBackend

__all__ = ["EzklBackend"]
