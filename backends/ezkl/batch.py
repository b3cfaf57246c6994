"""A `LoRABatch` as ONE EZKL graph: one input x_i and one output y_i per member, each member's subgraph the single
statement's graph (`graph.lora_forward`, the same exact requantisation), the params all members' adapters.

EZKL's run arguments are per category for the whole graph — one input scale, one visibility for all inputs, one for
all params, one for all outputs, one decomposition width — so:

* every input is fed at the batch's largest shift S (`batch_input_scale`: its cells hold x_q exactly) and a member
  with a smaller shift s relabels its z by 2^(S−s), which EZKL folds into the scale (no constraint, no rounding:
  z's cells stay z), so each member's requantisation runs at its own scale s exactly as alone;
* the decomposition width is the widest any member needs (`batch_decomp_legs`; more digits are as sound);
* members must agree on how x, the adapter and y are bound (`unsupported_batch_reason`).

Supported bindings: x public or polycommit, the adapter fixed or polycommit, y public or polycommit. Hashed bindings
are refused: EZKL's hashed params are ONE Poseidon digest over every member's constants together, which is not any
member's `adapter_digest` — a batch would need its own batch-level digest definition (and hashed x costs ~41 rows per
value); an unbound adapter binds nothing and is not offered for batches. Spec: specs/ezkl-backend.md, "Batches".
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backends.ezkl import graph
from backends.ezkl.settings import (ADAPTER_VISIBILITY, NUM_INNER_COLS, X_VISIBILITY, Y_VISIBILITY, RunSettings)
from zkref.lora.batch import LoRABatch
from zkref.lora.statement import (ActivationBinding, AdapterBinding, LoRAStatement, LoRAWitness, OutputBinding)

BATCH_X = (ActivationBinding.PUBLIC, ActivationBinding.POLYCOMMIT)
BATCH_ADAPTER = (AdapterBinding.FIXED, AdapterBinding.POLYCOMMIT)
BATCH_Y = (OutputBinding.PUBLIC, OutputBinding.POLYCOMMIT)
HASHED_REASON = ("hashed bindings are not offered for batches: EZKL's hashed params are ONE Poseidon digest over every "
                 "member's constants together, not any member's adapter_digest, so a batch would need a batch-level "
                 "digest definition (and hashed x costs ~41 rows per value); use polycommit")


def input_names(batch: LoRABatch) -> list[str]:
    return [f"{graph.INPUT_NAME}_{i}" for i in range(len(batch.members))]


def output_names(batch: LoRABatch) -> list[str]:
    return [f"{graph.OUTPUT_NAME}_{i}" for i in range(len(batch.members))]


def batch_input_scale(batch: LoRABatch) -> int:
    """EZKL's one input scale for the batch: the largest member shift."""
    return max(m.shift for m in batch.members)


def batch_decomp_legs(batch: LoRABatch) -> int:
    """EZKL's one decomposition width for the batch: the widest any member needs at the batch's input scale
    (`graph.decomp_legs`; more digits are as sound)."""
    scale = batch_input_scale(batch)
    return max(graph.decomp_legs(m, scale=scale) for m in batch.members)


def unsupported_batch_reason(batch: LoRABatch) -> str | None:
    """Why the EZKL backend cannot prove this batch as one graph (None if it can)."""
    first = batch.members[0]
    for name, member in zip(batch.names, batch.members):
        for binding, allowed in ((member.x_binding, BATCH_X), (member.adapter_binding, BATCH_ADAPTER),
                                 (member.y_binding, BATCH_Y)):
            if binding not in allowed:
                if binding.value.startswith("hashed"):
                    return f"{name}: {HASHED_REASON}"
                if binding is AdapterBinding.UNBOUND:
                    return f"{name}: an unbound adapter binds nothing; batches take fixed or polycommit adapters"
                return f"{name}: {binding.value} is not a batch binding"
        if (member.x_binding, member.adapter_binding, member.y_binding) != \
                (first.x_binding, first.adapter_binding, first.y_binding):
            return (f"{name}: members must bind x, the adapter and y the same way (EZKL sets one visibility for all "
                    "inputs, one for all params, one for all outputs)")
        reason = graph.unsupported_reason(member, scale=batch_input_scale(batch))
        if reason:
            return f"{name}: {reason}"
    return None


def batch_run_args(batch: LoRABatch, *, logrows: int, num_inner_cols: int = NUM_INNER_COLS) -> RunSettings:
    """The pinned run arguments of the batch's graph (as `settings.run_args_for` for one statement)."""
    first = batch.members[0]
    return RunSettings(input_visibility=X_VISIBILITY[first.x_binding],
                       param_visibility=ADAPTER_VISIBILITY[first.adapter_binding],
                       output_visibility=Y_VISIBILITY[first.y_binding],
                       input_scale=batch_input_scale(batch), decomp_base=graph.decomp_base(batch_input_scale(batch)),
                       decomp_legs=batch_decomp_legs(batch), logrows=logrows, num_inner_cols=num_inner_cols)


def batch_input_data(batch: LoRABatch, xs: Sequence[np.ndarray]) -> dict:
    """EZKL's data JSON: one flat list per input, x_q / 2^S (exact dyadic floats; EZKL's quantisation returns x_q)."""
    scale = float(1 << batch_input_scale(batch))
    return {"input_data": [[float(v) / scale for v in np.asarray(x, dtype=np.int64).reshape(-1).tolist()]
                           for x in xs]}


def output_scales(batch: LoRABatch) -> list[int]:
    """Every output's cells hold y_q·2^S (S the batch's input scale; a relabelled member runs at scale S)."""
    return [batch_input_scale(batch)] * len(batch.members)


def _graph_constants(member: LoRAStatement, scale: int) -> list[tuple[str, float, int]]:
    """A member's scalar constants in graph order: (role, the ONNX value, its quantised value when it has ONE
    consumer). Alone, EZKL quantises a constant at its consumer's scale: the clamp bounds at the requantisation scale
    (as in `requant_constants`), the comparison's 0 and the rounding offset (consumed at scale 0) and the relabel
    multiplier (a product: scale 0) as they are."""
    out: list[tuple[str, float, int]] = []
    relabel = scale - member.shift
    if relabel:
        out.append(("relabel", float(1 << relabel), 1 << relabel))
    if member.shift:
        out += [("zero", 0.0, 0), ("round", float(1 << (member.shift - 1)), 1 << (member.shift - 1))]
    q = member.z_range
    out += [("lo", float(q.lo), q.lo << scale), ("hi", float(q.hi), q.hi << scale)]
    return out


def batch_params_message(batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> list[int]:
    """Every parameter of the batch graph as EZKL holds it, in graph order: what a polycommit adapter's commitment
    covers (and what hashed params would hash).

    Member by member: A_qᵀ row-major, the member's scalar constants (`_graph_constants`), B_qᵀ row-major — except that
    EZKL's ONNX loader (tract) merges constants of equal value across the whole graph: a constant whose value an
    earlier member already holds is not repeated, and a constant with several consumers stays at scale 0 (its raw
    value; EZKL rescales it at each use). For one member this is `graph.params_message`. Tested equal to EZKL's own
    hash of the params (tests/test_ezkl_batch.py).
    """
    from zkref.primitives.field import P

    scale = batch_input_scale(batch)
    constants = [_graph_constants(m, scale) for m in batch.members]
    uses: dict[float, int] = {}
    for member_constants in constants:
        for _, value, _ in member_constants:
            uses[value] = uses.get(value, 0) + 1
    out: list[int] = []
    seen: set[float] = set()
    for member_constants, w in zip(constants, witnesses):
        out += [int(v) % P for v in np.asarray(w.A_q).T.reshape(-1).tolist()]
        for _, value, alone in member_constants:
            if value in seen:
                continue
            seen.add(value)
            out.append((alone if uses[value] == 1 else int(value)) % P)
        out += [int(v) % P for v in np.asarray(w.B_q).T.reshape(-1).tolist()]
    return out


def member_onnx(member: LoRAStatement, witness: LoRAWitness, *, index: int, input_scale: int):
    """Member `index`'s graph as the single statement's (`graph.lora_forward`, relabelled to `input_scale` when its
    shift is smaller), exported alone and every name prefixed `m{index}/` except its input x_{index} and output
    y_{index}: merged graphs share no node, value or constant (one torch export would pool equal constants)."""
    import onnx
    import onnx.compose
    import torch

    relabel = input_scale - member.shift

    class Member(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.A = graph.frozen_parameter(witness.A_q)
            self.B = graph.frozen_parameter(witness.B_q)

        def forward(self, x):
            return graph.lora_forward(x, self.A, self.B, member.shift, relabel=relabel, z_bits=member.z_bits)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Member(), (torch.zeros(member.shape.x_shape, dtype=torch.float32),), buffer,
                          input_names=[f"{graph.INPUT_NAME}_{index}"], output_names=[f"{graph.OUTPUT_NAME}_{index}"],
                          opset_version=graph.OPSET, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    return onnx.compose.add_prefix(model, f"m{index}/", rename_inputs=False, rename_outputs=False)


def export_batch_onnx(batch: LoRABatch, witnesses: Sequence[LoRAWitness], path: Path) -> None:
    """Write the batch's graph as ONNX: the members' graphs side by side (inputs x_0…, outputs y_0…, nodes and
    constants in member order, each member's in its single graph's order)."""
    import onnx

    batch.check_witnesses(witnesses)
    scale = batch_input_scale(batch)
    parts = [member_onnx(m, w, index=i, input_scale=scale)
             for i, (m, w) in enumerate(zip(batch.members, witnesses))]
    merged = onnx.helper.make_graph(
        nodes=[n for p in parts for n in p.graph.node], name="zkref_lora_batch",
        inputs=[v for p in parts for v in p.graph.input], outputs=[v for p in parts for v in p.graph.output],
        initializer=[t for p in parts for t in p.graph.initializer],
        value_info=[v for p in parts for v in p.graph.value_info])
    model = onnx.helper.make_model(merged, opset_imports=parts[0].opset_import,
                                   producer_name="zkref", ir_version=parts[0].ir_version)
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())
