"""Contributor server and client end to end with real EZKL proofs (Halo2/KZG, development SRS) on a tiny model.

Small on purpose: one LoRA module (layer 0's c_attn, 64→192, r=2), two tokens. The EZKL cache (SRS, circuits, keys)
is shared by this module and the demo test, under the session's temporary directory unless ZKREF_CACHE is set.
"""
import base64
import json
import os

import httpx
import numpy as np
import pytest

pytest.importorskip("ezkl")

from backends.ezkl.backend import EzklBackend  # noqa: E402
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora  # noqa: E402
from zkref.primitives.field import P, felt_from_str, felt_to_str  # noqa: E402
from zkref.protocol import messages as m  # noqa: E402
from zkref.protocol.client import BaseModelClient  # noqa: E402
from zkref.protocol.contributor import load_contributor  # noqa: E402
from zkref.protocol.provers import ProcessProver  # noqa: E402
from zkref.protocol.server import ServerConfig, ServerThread, create_app  # noqa: E402
from zkref.protocol.tensors import Dim, TensorSpec, decode_tensors, encode_tensors  # noqa: E402

pytestmark = [pytest.mark.ezkl, pytest.mark.slow]
MODULE = "transformer.h.0.attn.c_attn"
PROMPT = [9, 40]


@pytest.fixture(scope="session")
def ezkl_cache(tmp_path_factory):
    return os.environ.get("ZKREF_CACHE") or str(tmp_path_factory.getbasetemp() / "ezkl-cache")


class ForgeOutput(httpx.HTTPTransport):
    """Changes y_q[0, 0] in the call's answer and, to match, the proof's public instance for it: the binding checks
    then pass and only EZKL's cryptographic verification stands between the client and the forged output."""

    def handle_request(self, request):
        response = super().handle_request(request)
        response.read()
        path = request.url.path
        if request.method == "POST" and path.endswith("/calls"):
            doc = json.loads(response.content)
            spec = {"y_q": TensorSpec("I32", (Dim(1, 64), Dim.exactly(192))),
                    "delta": TensorSpec("F64", (Dim(1, 64), Dim.exactly(192)))}
            arrays = decode_tensors(base64.b64decode(doc["tensors"]), spec)
            y, delta = arrays["y_q"], arrays["delta"]
            factor = delta[0, 0] / y[0, 0] if y[0, 0] else 0.0
            y[0, 0] += 1
            delta[0, 0] = factor * y[0, 0]
            doc["tensors"] = base64.b64encode(encode_tensors({"y_q": y, "delta": delta})).decode()
            return httpx.Response(200, headers={"content-type": "application/json"}, content=json.dumps(doc).encode())
        if request.method == "GET" and path.startswith("/v1/calls/"):
            doc = json.loads(response.content)
            if doc["status"] == "done":
                index = len(PROMPT) * 64  # instances: x_q (T × 64) first, then y_q row-major
                value = (felt_from_str(doc["proof"]["instances"][index]) + 1) % P
                doc["proof"]["instances"][index] = felt_to_str(value)
                return httpx.Response(200, headers={"content-type": "application/json"},
                                      content=json.dumps(doc).encode())
        return response


def test_ezkl_end_to_end_and_a_forged_output(tmp_path, ezkl_cache):
    base = build_tiny_gpt2(tmp_path / "base", seed=0)
    adapter = save_random_lora(base, tmp_path / "adapter", seed=1, r=2, lora_alpha=4, target_modules=["c_attn"],
                               layers_to_transform=[0], fan_in_fan_out=True, lora_dropout=0.0)
    contributor = load_contributor(base_dir=base, adapter_dir=adapter)
    prover = ProcessProver(workers=1)
    config = ServerConfig(backend="ezkl", backend_options={"cache_dir": ezkl_cache}, max_tokens=len(PROMPT),
                          token_buckets=(len(PROMPT),))
    with ServerThread(create_app(contributor, config, prover), prover=prover) as server:
        with BaseModelClient(base_dir=base, contributors=[server.url], reference_adapters=[adapter],
                             cache_dir=ezkl_cache, proof_timeout=300) as client:
            result = client.run(PROMPT)
            manifest = client.sessions[0].manifest
            status = m.CallStatus.model_validate_json(
                httpx.get(f"{server.url}/v1/calls/{result.calls[0].call_id}").content)
        with BaseModelClient(base_dir=base, contributors=[server.url], cache_dir=ezkl_cache, proof_timeout=300,
                             transport=ForgeOutput()) as forged_client:
            forged = forged_client.run(PROMPT)
    assert manifest.backend.name == "ezkl" and manifest.backend.zero_knowledge
    assert result.verified, [(c.label, c.reason) for c in result.calls]
    assert [(c.module, c.call) for c in result.calls] == [(MODULE, 0)]
    assert "EZKL KZG proof verified against the pinned verifying key" in result.calls[0].reason
    proof = status.proof.proof()
    assert proof.zero_knowledge and proof.meta["dev_srs"] is True
    assert any("SRS" in w for w in result.warnings)
    acc = result.accuracy
    assert acc.modules[0].module == MODULE and acc.modules[0].relative_error < 0.3 and acc.top1_agreement == 1.0
    # the forged output passes every binding check (instances match what the client holds) and fails the KZG check
    failure = forged.calls[0]
    assert not forged.verified and failure.label == f"{MODULE} call 0"
    assert "EZKL rejected the proof" in failure.reason, failure.reason
    # the verifying key the client pinned (the server's commitment) is the one the worker proved under and the one
    # this process derives from the shared cache: what lets workers on other processes or machines that share the
    # cache prove under the published anchor (specs/protocol.md, "Pointing it at a cluster": separate caches can
    # disagree, see there)
    anchor = client.sessions[0].commitment.anchor(MODULE, len(PROMPT))
    served = contributor.modules[MODULE]
    here = EzklBackend(cache_dir=ezkl_cache).anchor(
        served.statement(len(PROMPT)), served.witness(np.zeros((len(PROMPT), 64), dtype=np.int64)))
    assert here.vk_hash == anchor.vk_hash == proof.vk_hash
