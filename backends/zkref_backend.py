"""The zkref backend: the MockProver over zkref's layout of a statement. A mock check, NOT a zero-knowledge proof.

Its "proof" is the witness itself (A_q, B_q, x_q as JSON) and the layout choices; `verify` replays the MockProver over
it, with the instances built from the verifier's own public values. That makes every check of the statement real
(gates, lookups, copies, instances: a tampered value is caught and named) while hiding nothing: use it for fast
tests and development, and a real backend (ezkl) for anything a third party must trust.

A fixed adapter is part of the circuit: its "verifying key" here is the canonical JSON of the adapter and the
statement id, so pinning its hash binds the adapter exactly as a real verifying key would.
"""
from __future__ import annotations

import json
import time

import numpy as np

from backends.base import (AdapterAnchor, Progress, Proof, ProofResult, Support, Verdict, canonical_json,
                           check_binding, sha256_hex)
from zkref.lora.circuit import LoRACircuit, LoRALayout, unsupported_reason
from zkref.lora.statement import (AdapterBinding, LoRAPublic, LoRAStatement, LoRAWitness, encode_instances, evaluate,
                                  public_values)
from zkref.plonkish.mock_prover import MockProver

NAME = "zkref"
PROOF_FORMAT = "zkref-mock-proof/1"


class ZkrefBackend:
    """Mock-proves statements with zkref's own circuits (`LoRACircuit`) and the MockProver."""

    name = NAME
    zero_knowledge = False

    def __init__(self, *, layout: LoRALayout = LoRALayout()):
        self.layout = layout

    def supports(self, statement: LoRAStatement) -> Support:
        reason = unsupported_reason(statement, self.layout)
        return Support(False, reason) if reason else Support(True, "mock check with zkref's circuits (not ZK)")

    def _vk(self, statement: LoRAStatement, witness: LoRAWitness) -> bytes:
        """The circuit's fixed content a verifier pins: the statement id, the layout and a fixed adapter's values."""
        fixed = statement.adapter_binding is AdapterBinding.FIXED
        return canonical_json({"format": PROOF_FORMAT, "statement_id": statement.id,
                               "lanes": self.layout.lanes, "products": self.layout.products.value,
                               "A_q": witness.A_q.tolist() if fixed else None,
                               "B_q": witness.B_q.tolist() if fixed else None})

    def anchor(self, statement: LoRAStatement, witness: LoRAWitness) -> AdapterAnchor:
        statement.check_witness(witness)
        digest = public_values(statement, witness).adapter_digest
        return AdapterAnchor(backend=NAME, statement_id=statement.id, vk_hash=sha256_hex(self._vk(statement, witness)),
                             digest=None if digest is None else f"0x{digest:064x}")

    def prove(self, statement: LoRAStatement, witness: LoRAWitness, *,
              progress: Progress | None = None) -> ProofResult:
        support = self.supports(statement)
        if not support:
            raise ValueError(support.reason)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if progress:
            progress("witness")
        trace = evaluate(statement, witness)
        public = public_values(statement, witness, trace)
        instances = encode_instances(statement, public)
        timings["witness"] = time.perf_counter() - t0
        if progress:
            progress("prove")
        t0 = time.perf_counter()
        failures = self._check(statement, witness, instances)
        timings["prove"] = time.perf_counter() - t0
        if failures:
            raise ValueError(f"the witness does not satisfy the circuit: {failures[0]}")
        vk = self._vk(statement, witness)
        data = canonical_json({"format": PROOF_FORMAT, "A_q": witness.A_q.tolist(), "B_q": witness.B_q.tolist(),
                               "x_q": witness.x_q.tolist()})
        proof = Proof(backend=NAME, statement_id=statement.id, instances=tuple(instances), data=data,
                      zero_knowledge=False, vk=vk, vk_hash=sha256_hex(vk),
                      settings={"lanes": self.layout.lanes, "products": self.layout.products.value},
                      meta={"note": "mock check: the proof is the witness; nothing is hidden",
                            "timings": timings})
        return ProofResult(public, proof, timings)

    def _check(self, statement: LoRAStatement, witness: LoRAWitness, instances: list[int]) -> list:
        circuit = LoRACircuit(statement=statement, witness=witness, layout=self.layout)
        return MockProver(circuit, [instances]).verify()

    def verify(self, statement: LoRAStatement, public: LoRAPublic, proof: Proof, *,
               anchor: AdapterAnchor | None = None) -> Verdict:
        verdict = check_binding(NAME, statement, public, proof, anchor)
        if not verdict:
            return verdict
        try:
            witness, layout = _parse_proof(proof)
            statement.check_witness(witness)
        except ValueError as exc:
            return Verdict(False, f"malformed mock proof: {exc}")
        backend = ZkrefBackend(layout=layout)
        if proof.vk != backend._vk(statement, witness):
            return Verdict(False, "the proof's adapter or layout differs from its verifying key")
        failures = backend._check(statement, witness, list(proof.instances))
        if failures:
            return Verdict(False, f"MockProver: {len(failures)} failure(s), first: {failures[0]}")
        unbound = "" if statement.adapter_binding.bound else "; adapter UNBOUND: any adapter satisfies this statement"
        return Verdict(True, f"mock check passed (zkref MockProver; not a zero-knowledge proof){unbound}")


def _parse_proof(proof: Proof) -> tuple[LoRAWitness, LoRALayout]:
    try:
        data = json.loads(proof.data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PROOF_FORMAT or set(data) != {"format", "A_q", "B_q", "x_q"}:
        raise ValueError(f"expected a {PROOF_FORMAT} object with A_q, B_q, x_q")
    settings = proof.settings
    if not isinstance(settings, dict) or set(settings) != {"lanes", "products"}:
        raise ValueError("settings must hold lanes and products")
    layout = LoRALayout(lanes=settings["lanes"], products=settings["products"])
    return LoRAWitness(A_q=np.asarray(data["A_q"]), B_q=np.asarray(data["B_q"]), x_q=np.asarray(data["x_q"])), layout
