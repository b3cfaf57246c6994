"""The zkref backend: the MockProver over zkref's layout of a statement. A mock check, NOT a zero-knowledge proof.

Its "proof" is the witness itself (A_q, B_q, x_q as JSON) and the layout choices; `verify` replays the MockProver over
it, with the instances built from the verifier's own public values. That makes every check of the statement real
(gates, lookups, copies, instances: a tampered value is caught and named) while hiding nothing: use it for fast
tests and development, and a real backend (ezkl) for anything a third party must trust.

A fixed adapter is part of the circuit: its "verifying key" here is the canonical JSON of the adapter and the
statement id, so pinning its hash binds the adapter exactly as a real verifying key would. A batch is checked as
the conjunction of its members' circuits (the same statement: each member holds), under the batch's id.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from backends.base import (MAX_PROOF_BYTES, AdapterAnchor, BatchProofResult, Progress, Proof, ProofResult, Support,
                           Verdict, canonical_json, check_binding, sha256_hex)
from zkref.lora.batch import LoRABatch
from zkref.lora.circuit import LoRACircuit, LoRALayout, unsupported_reason
from zkref.lora.statement import (AdapterBinding, LoRAPublic, LoRAStatement, LoRAWitness, encode_instances,
                                  instance_length, public_values)
from zkref.plonkish.mock_prover import MockProver
from zkref.primitives.jsonsafe import parse_json
from zkref.primitives.ranges import over_budget

NAME = "zkref"
PROOF_FORMAT = "zkref-mock-proof/1"
BATCH_PROOF_FORMAT = "zkref-mock-batch-proof/1"
BYTES_PER_MAC = 1 << 10
"""The MockProver's memory per multiply-accumulate of the layout, rounded up from the most measured (peak RSS above the
interpreter's: 200–410 B at 8 lanes, 865 B at 1 lane, on 4096→4096 r=16 and 768→2304 r=8 T=64)."""
BYTES_PER_HASHED_FELT = 128 << 10
"""… and per field element hashed in-circuit by the Poseidon chip (hashed x or adapter; up to 111 KiB measured on
16→16 to 256→256 r=4–8, fully hashed)."""


def memory_estimate(statement: LoRAStatement) -> int:
    """Bytes a mock proof of `statement` allocates, at most: its tensors and the MockProver's layout of the circuit."""
    return statement.shape.tensor_bytes + BYTES_PER_MAC * statement.shape.macs + \
        BYTES_PER_HASHED_FELT * statement.hashed_felts


class ZkrefBackend:
    """Mock-proves statements with zkref's own circuits (`LoRACircuit`) and the MockProver."""

    name = NAME
    zero_knowledge = False

    def __init__(self, *, layout: LoRALayout = LoRALayout()):
        self.layout = layout

    # -- one statement -------------------------------------------------------------------------------------------
    def supports(self, statement: LoRAStatement) -> Support:
        reason = unsupported_reason(statement, self.layout) or \
            over_budget(f"a mock proof of {statement.shape}", memory_estimate(statement))
        return Support(False, reason) if reason else Support(True, "mock check with zkref's circuits (not ZK)")

    def anchor(self, statement: LoRAStatement, witness: LoRAWitness) -> AdapterAnchor:
        statement.check_witness(witness)
        digest = public_values(statement, witness).adapter_digest
        vk = self._vk(PROOF_FORMAT, statement.id, [statement], [witness])
        return AdapterAnchor(backend=NAME, statement_id=statement.id, vk_hash=sha256_hex(vk),
                             digest=None if digest is None else f"0x{digest:064x}")

    def prove(self, statement: LoRAStatement, witness: LoRAWitness, *,
              progress: Progress | None = None) -> ProofResult:
        publics, proof, timings = self._prove(PROOF_FORMAT, statement.id, [statement], [witness],
                                              self.supports(statement), progress)
        return ProofResult(publics[0], proof, timings)

    def verify(self, statement: LoRAStatement, public: LoRAPublic, proof: Proof, *,
               anchor: AdapterAnchor | None) -> Verdict:
        verdict = check_binding(NAME, statement, public, proof, anchor)
        return self._replay(PROOF_FORMAT, statement.id, [statement], proof) if verdict else verdict

    # -- a batch -------------------------------------------------------------------------------------------------
    def supports_batch(self, batch: LoRABatch) -> Support:
        for name, member in zip(batch.names, batch.members):
            support = self.supports(member)
            if not support:
                return Support(False, f"{name}: {support.reason}")
        reason = over_budget(f"a mock proof of {len(batch.members)} modules",
                             sum(memory_estimate(m) for m in batch.members))
        if reason:
            return Support(False, reason)
        return Support(True, f"mock check of {len(batch.members)} circuits (not ZK)")

    def anchor_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> AdapterAnchor:
        batch.check_witnesses(witnesses)
        vk = self._vk(BATCH_PROOF_FORMAT, batch.id, batch.members, witnesses)
        return AdapterAnchor(backend=NAME, statement_id=batch.id, vk_hash=sha256_hex(vk))

    def prove_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness], *,
                    progress: Progress | None = None) -> BatchProofResult:
        batch.check_witnesses(witnesses)
        publics, proof, timings = self._prove(BATCH_PROOF_FORMAT, batch.id, batch.members, witnesses,
                                              self.supports_batch(batch), progress)
        return BatchProofResult(tuple(publics), proof, timings)

    def verify_batch(self, batch: LoRABatch, publics: Sequence[LoRAPublic], proof: Proof, *,
                     anchor: AdapterAnchor | None) -> Verdict:
        verdict = check_binding(NAME, batch, publics, proof, anchor)
        return self._replay(BATCH_PROOF_FORMAT, batch.id, batch.members, proof) if verdict else verdict

    # -- shared --------------------------------------------------------------------------------------------------
    def _vk(self, fmt: str, statement_id: str, statements: Sequence[LoRAStatement],
            witnesses: Sequence[LoRAWitness]) -> bytes:
        """The circuits' fixed content a verifier pins: the id, the layout and every fixed adapter's values."""
        fixed = [s.adapter_binding is AdapterBinding.FIXED for s in statements]
        return canonical_json({"format": fmt, "statement_id": statement_id,
                               "lanes": self.layout.lanes, "products": self.layout.products.value,
                               "adapters": [[w.A_q.tolist(), w.B_q.tolist()] if f else None
                                            for f, w in zip(fixed, witnesses)]})

    def _check(self, statement: LoRAStatement, witness: LoRAWitness, instances: list[int]) -> list:
        circuit = LoRACircuit(statement=statement, witness=witness, layout=self.layout)
        return MockProver(circuit, [instances]).verify()

    def _prove(self, fmt: str, statement_id: str, statements: Sequence[LoRAStatement],
               witnesses: Sequence[LoRAWitness], support: Support, progress: Progress | None
               ) -> tuple[list[LoRAPublic], Proof, dict[str, float]]:
        if not support:
            raise ValueError(support.reason)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if progress:
            progress("witness")
        publics = [public_values(s, w) for s, w in zip(statements, witnesses)]
        instances = [encode_instances(s, p) for s, p in zip(statements, publics)]
        timings["witness"] = time.perf_counter() - t0
        if progress:
            progress("prove")
        t0 = time.perf_counter()
        for statement, witness, inst in zip(statements, witnesses, instances):
            failures = self._check(statement, witness, inst)
            if failures:
                raise ValueError(f"the witness does not satisfy the circuit: {failures[0]}")
        timings["prove"] = time.perf_counter() - t0
        vk = self._vk(fmt, statement_id, statements, witnesses)
        data = canonical_json({"format": fmt, "witnesses": [
            {"A_q": w.A_q.tolist(), "B_q": w.B_q.tolist(), "x_q": w.x_q.tolist()} for w in witnesses]})
        proof = Proof(backend=NAME, statement_id=statement_id, instances=tuple(v for i in instances for v in i),
                      data=data, zero_knowledge=False, vk=vk, vk_hash=sha256_hex(vk),
                      settings={"lanes": self.layout.lanes, "products": self.layout.products.value},
                      meta={"note": "mock check: the proof is the witness; nothing is hidden", "timings": timings})
        return publics, proof, timings

    def _replay(self, fmt: str, statement_id: str, statements: Sequence[LoRAStatement], proof: Proof) -> Verdict:
        """Replay the MockProver over the witnesses in a proof whose binding checks passed."""
        try:
            witnesses, layout = _parse_proof(fmt, proof, len(statements))
            for statement, witness in zip(statements, witnesses):
                statement.check_witness(witness)
        except ValueError as exc:
            return Verdict(False, f"malformed mock proof: {exc}")
        backend = ZkrefBackend(layout=layout)
        if proof.vk != backend._vk(fmt, statement_id, statements, witnesses):
            return Verdict(False, "the proof's adapter or layout differs from its verifying key")
        offsets = [0]
        for statement in statements:
            offsets.append(offsets[-1] + instance_length(statement))
        for i, (statement, witness) in enumerate(zip(statements, witnesses)):
            failures = backend._check(statement, witness, list(proof.instances[offsets[i]:offsets[i + 1]]))
            if failures:
                where = f"member {i}: " if len(statements) > 1 else ""
                return Verdict(False, f"MockProver: {where}{len(failures)} failure(s), first: {failures[0]}")
        unbound = "" if all(s.adapter_binding.bound for s in statements) else \
            "; adapter UNBOUND: any adapter satisfies this statement"
        return Verdict(True, f"mock check passed (zkref MockProver; not a zero-knowledge proof){unbound}")


def _parse_proof(fmt: str, proof: Proof, members: int) -> tuple[list[LoRAWitness], LoRALayout]:
    data = parse_json(proof.data, what="proof data", max_bytes=MAX_PROOF_BYTES)
    if not isinstance(data, dict) or set(data) != {"format", "witnesses"} or data["format"] != fmt:
        raise ValueError(f"expected a {fmt} object with witnesses")
    items = data["witnesses"]
    if not isinstance(items, list) or len(items) != members:
        raise ValueError(f"expected {members} witness(es)")
    if not all(isinstance(w, dict) and set(w) == {"A_q", "B_q", "x_q"} for w in items):
        raise ValueError("each witness holds A_q, B_q, x_q")
    settings = proof.settings
    if not isinstance(settings, dict) or set(settings) != {"lanes", "products"}:
        raise ValueError("settings must hold lanes and products")
    layout = LoRALayout(lanes=settings["lanes"], products=settings["products"])
    return [LoRAWitness(A_q=np.asarray(w["A_q"]), B_q=np.asarray(w["B_q"]), x_q=np.asarray(w["x_q"]))
            for w in items], layout


