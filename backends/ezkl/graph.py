"""The LoRA statement as an ONNX graph whose EZKL witness is `zkref.lora.statement.evaluate` exactly.

    input  x' = x_q / 2^s           (EZKL quantises it at input scale s: the input cells hold x_q itself)
    z'   = x' · A_qᵀ                (scale s: the cells hold z = x_q·A_qᵀ, the statement's exact integers)
    lt   = [z' < 0]                 (comparison with the constant 0: one sign decomposition)
    u    = z' + (2^(s-1) − lt)·2^-s (cells: z + 2^(s-1) − lt; the ·2^-s only relabels the scale)
    z_q  = clamp(floor(u), lo, hi)      (Floor decomposes u in base 2^s: exact; the clamp bounds of int{z_bits},
                                         −128 and 127 by default, sit at scale s)
    y'   = z_q · B_qᵀ               (scale s: the cells hold y_q·2^s, the statement's y shifted left by s)

floor((z + 2^(s-1) − [z<0]) / 2^s) is round-half-away-from-zero of z/2^s for integers z (ties of a negative z round
down because of the −1), and every step is constrained EXACTLY: a decomposition with range-checked digits. Nothing
in the graph is rebased. (The obvious graph, ``clamp(z / 2**s, -128, 127)`` at input scale 0, makes EZKL insert a
rebase whose constraint is |z − q·2^s| < 2^s: it admits both ⌊z/2^s⌋ and ⌈z/2^s⌉, so a dishonest prover could move
any requantised value by one. See specs/ezkl-backend.md, "Why not the rebase".) Shift 0 has no rounding step.

The graph's constants, in graph order, are what EZKL's "hashed" and "polycommit" params cover: `params_message`.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from zkref.lora.commitments import adapter_message
from zkref.lora.statement import SUPPORTED_WEIGHT_BITS, LoRAStatement, LoRAWitness
from zkref.primitives.ranges import Z_BITS_DEFAULT, IntRange

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "y"
DECOMP_BASE = 256
"""Base of EZKL's sign/comparison decompositions when nothing is floored (shift 0): a 256-row digit table."""
MAX_GRAPH_SHIFT = 16
"""Largest shift the graph supports: Floor range-checks its last digit against a 2^shift-row table."""
MAX_DECOMP_LEGS = 15
"""Most digits a decomposition may have: EZKL holds decomp_base^legs in an i128 (measured: 256^16 is refused with
"decomp_base^decomp_legs overflows IntegerRep"). Floor decomposes in base 2^shift with the same number of legs, so a
small shift under a wide value range (int8 weights, or a wide z_q, at shift 1) is out of EZKL's reach."""


def params_message(A_q: np.ndarray, B_q: np.ndarray, shift: int, z_bits: int = Z_BITS_DEFAULT) -> list[int]:
    """Every constant of the graph in graph order as field elements — A_qᵀ row-major ‖ requant constants ‖ B_qᵀ
    row-major — which is `zkref.lora.commitments.adapter_message`: EZKL's hashed params are Poseidon over it and its
    polycommit params commit to it (one tensor)."""
    return adapter_message(A_q, B_q, shift=shift, packed=False, weight_bits=max(SUPPORTED_WEIGHT_BITS), z_bits=z_bits)


def value_bound(statement: LoRAStatement) -> int:
    """A bound on |every value the requantisation decomposes|: z, z + 2^(s-1), and z_q·2^s minus a clamp bound."""
    lo, hi = statement.z_bounds
    return max(-lo, hi) + (-statement.z_range.lo + 1) * (1 << statement.shift)


def decomp_base(scale: int) -> int:
    """Base of every EZKL decomposition of a graph whose requantisation runs at `scale`: 2^scale, the base Floor's digits
    are in anyway, so the comparisons' digits share Floor's range table and the circuit has one lookup table fewer
    (measured: benchmarks/results/ezkl_levers.md, lever base256); `DECOMP_BASE` when nothing is floored (scale 0)."""
    return 1 << scale if scale else DECOMP_BASE


def decomp_legs(statement: LoRAStatement, *, scale: int | None = None) -> int:
    """Digits per decomposition in base `decomp_base(scale)`: enough for `value_bound`. `scale` (default the shift) is
    the scale the requantisation runs at: a batch member relabelled to a larger scale S holds every value times
    2^(S − shift) and floors in base 2^S (backends/ezkl/batch.py)."""
    scale = statement.shift if scale is None else scale
    if scale < statement.shift:
        raise ValueError(f"scale {scale} is below the statement's shift {statement.shift}")
    bits = (value_bound(statement) << (scale - statement.shift)).bit_length()
    return max(2, math.ceil(bits / math.log2(decomp_base(scale))))


def unsupported_reason(statement: LoRAStatement, *, scale: int | None = None) -> str | None:
    """Why this graph cannot hold the statement (at a batch's `scale`), or None."""
    if statement.shift > MAX_GRAPH_SHIFT:
        return (f"shift {statement.shift} > {MAX_GRAPH_SHIFT}: the exact rounding step range-checks against a "
                f"2^shift-row table")
    legs = decomp_legs(statement, scale=scale)
    if legs > MAX_DECOMP_LEGS:
        return (f"the requantisation's decompositions need {legs} digits > {MAX_DECOMP_LEGS} (EZKL's limit): values "
                f"up to {value_bound(statement):,} in base 2^{statement.shift if scale is None else scale}; a larger "
                "shift or a narrower z_q fits")
    return None


def input_data(x_q: np.ndarray, shift: int) -> dict:
    """EZKL's data JSON for x_q: x_q / 2^s as floats (exact dyadic values; EZKL's quantisation at scale s returns x_q)."""
    scale = float(1 << shift)
    return {"input_data": [[float(v) / scale for v in np.asarray(x_q, dtype=np.int64).reshape(-1).tolist()]]}


def output_scale(statement: LoRAStatement) -> int:
    """EZKL's output cells hold y_q · 2^output_scale."""
    return statement.shift


def lora_forward(x, A, B, shift: int, *, relabel: int = 0, z_bits: int = Z_BITS_DEFAULT):
    """The statement's ops on torch tensors: z = x·Aᵀ, the exact requantisation (clamped to int{z_bits}), z_q·Bᵀ.

    `relabel` = m > 0 (batches only) multiplies z by 2^m first: fed at a batch's input scale S = shift + m, z's cells
    hold z at scale S (the value z/2^S); EZKL lays the product out as a multiplication by the scale-0 constant 2^m, so
    the cells hold z·2^m, still at scale S, i.e. the value z/2^shift the statement requantises. Every later step is
    then the same exact requantisation with all cells times 2^m (Floor decomposes in base 2^S); y's cells are y_q·2^S.
    """
    import torch

    z = x @ A.t()
    if relabel:
        z = z * (2.0 ** relabel)
    if shift:
        lt = (z < 0).to(torch.float32)
        u = z + (2.0 ** (shift - 1) - lt) * (2.0 ** -shift)
        z = torch.floor(u)
    q = IntRange(z_bits)
    z_q = torch.clamp(z, q.lo, q.hi)
    return z_q @ B.t()


def frozen_parameter(values: np.ndarray):
    """A constant of the graph (an ONNX initializer) holding integer values."""
    import torch

    return torch.nn.Parameter(torch.tensor(np.asarray(values), dtype=torch.float32), requires_grad=False)


def _module(A_q: np.ndarray, B_q: np.ndarray, shift: int, z_bits: int):
    import torch

    class LoRARequant(torch.nn.Module):
        """y = clamp(round_half_away(x·Aᵀ / 2^s), int{z_bits}) · Bᵀ, written so EZKL constrains every step exactly."""

        def __init__(self) -> None:
            super().__init__()
            self.A = frozen_parameter(A_q)
            self.B = frozen_parameter(B_q)

        def forward(self, x):
            return lora_forward(x, self.A, self.B, shift, z_bits=z_bits)

    return LoRARequant()


def export_onnx(statement: LoRAStatement, witness: LoRAWitness, path: Path) -> None:
    """Write the statement's graph with this witness's adapter as ONNX (torch export, opset 17, TorchScript path)."""
    import torch

    statement.check_witness(witness)
    module = _module(witness.A_q, witness.B_q, statement.shift, statement.z_bits)
    dummy = torch.zeros(statement.shape.x_shape, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False)
    Path(path).write_bytes(buffer.getvalue())
