"""What a client accepts (issue 14, "Soundness of what the client accepts"): the adapter commitment published before
any call, pinned from a file or on first use; anchors that pin too little; a late anchor for a new T; a rescaled
delta; proofs of batched and padded rows; hostile answers (deep JSON, unsupported bindings, `Retry-After: 0`).

The zkref mock backend keeps these fast; every check here is the backend-independent part of verification, and
tests/test_ezkl_backend.py checks the same anchor rules against real EZKL proofs.
"""
import base64
import dataclasses
import hashlib
import json
import time

import httpx
import numpy as np
import pytest

from backends import get_backend
from backends.base import AdapterAnchor
from zkref.cli.main import main
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora
from zkref.protocol import messages as m
from zkref.protocol.client import (RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, BaseModelClient, ContributorError, Endpoint,
                                   read_commitment, retry_delay)
from zkref.protocol.contributor import load_contributor
from zkref.protocol.provers import ProcessProver
from zkref.protocol.server import ServerConfig, ServerThread, create_app, default_buckets, publish_commitment

PROMPT = [5, 17, 99, 3]
C_ATTN = ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn")
GPT2_LORA = dict(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinning")
    base = build_tiny_gpt2(root / "base", seed=0)
    return {"root": root, "base": base,
            "adapter": save_random_lora(base, root / "adapter", seed=1, **GPT2_LORA),
            "other_adapter": save_random_lora(base, root / "other_adapter", seed=2, **GPT2_LORA)}


def start(base, adapter, **config) -> ServerThread:
    contributor = load_contributor(base_dir=base, adapter_dir=adapter, shift=5)
    prover = ProcessProver(workers=1)
    server = ServerThread(create_app(contributor, ServerConfig(backend="zkref", **config), prover), prover=prover)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(dirs):
    s = start(dirs["base"], dirs["adapter"], max_tokens=16, token_buckets=(4, 16))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def other_server(dirs):
    """Another adapter of the same shapes and shift: same statements, another commitment."""
    s = start(dirs["base"], dirs["other_adapter"], max_tokens=16, token_buckets=(4, 16))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def published(dirs, server):
    """The honest server's commitment, saved as a contributor would publish it."""
    path = dirs["root"] / "commitment.json"
    path.write_bytes(httpx.get(f"{server.url}/v1/commitment").content)
    return path


class Rewrite(httpx.HTTPTransport):
    """Forwards every request; `rules[path-suffix](doc) -> doc` rewrites JSON answers; POSTs are counted."""

    def __init__(self, rules=None, redirect=None):
        super().__init__()
        self.rules, self.redirect, self.posts = rules or {}, redirect, 0

    def handle_request(self, request):
        if request.method == "POST":
            self.posts += 1
        if self.redirect:
            request = httpx.Request(request.method, str(request.url).replace(*self.redirect),
                                    headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                                    content=request.content)
        response = super().handle_request(request)
        for suffix, rule in self.rules.items():
            if request.url.path.endswith(suffix) and response.status_code == 200 \
                    and response.headers.get("content-type", "").startswith("application/json"):
                response.read()
                doc = rule(json.loads(response.content))
                return httpx.Response(200, headers={"content-type": "application/json"},
                                      content=json.dumps(doc).encode())
        return response


def commitment_id(doc: dict) -> str:
    return m.AdapterCommitment.model_validate(doc).id


# ----------------------------------------------------------------------------------------------------------------------
# The commitment: published once, pinned
# ----------------------------------------------------------------------------------------------------------------------

def test_the_commitment_pins_every_module_and_allowed_t_before_any_call(dirs, server, published):
    commitment = read_commitment(published)
    manifest = m.Manifest.model_validate_json(httpx.get(f"{server.url}/v1/manifest").content)
    assert manifest.commitment_id == commitment.id and commitment.tokens == [4, 16]
    assert [mod.name for mod in commitment.modules] == list(C_ATTN)
    for mod in commitment.modules:
        assert mod.dequantisation == manifest.module(mod.name).dequantisation
        for tokens, info in zip(commitment.tokens, mod.anchors):
            assert info.statement_id == mod.statement.statement(tokens).id and info.vk_hash
    # the anchor endpoint serves the commitment's anchors, and nothing for an uncommitted T (no setup on request)
    anchor = httpx.get(f"{server.url}/v1/modules/{C_ATTN[0]}/anchors/16").json()
    assert anchor["anchor"] == commitment.modules[0].anchors[1].model_dump()
    late = httpx.get(f"{server.url}/v1/modules/{C_ATTN[0]}/anchors/5")
    assert late.status_code == 404 and late.json()["error"]["code"] == "not_committed"
    assert default_buckets(64) == (1, 4, 16, 64) and default_buckets(20) == (1, 4, 16, 20)


def test_pinned_from_a_file_verifies_and_is_labelled(dirs, server, published):
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published]) as c:
        result = c.run(PROMPT)
    assert result.verified, [(r.label, r.reason) for r in result.calls]
    assert result.contributors[0]["commitment_pinned"] == "file"
    assert not any("first use" in w for w in result.warnings)


def test_pinned_on_first_use_is_labelled(dirs, server):
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url]) as c:
        result = c.run(PROMPT)
    assert result.verified and result.contributors[0]["commitment_pinned"] == "first use"
    assert any("pinned on first use" in w for w in result.warnings)


def test_another_adapter_is_refused_before_any_activation_is_sent(dirs, other_server, published):
    transport = Rewrite()
    with BaseModelClient(base_dir=dirs["base"], contributors=[other_server.url], anchors=[published],
                         transport=transport) as c:
        with pytest.raises(ContributorError, match="none of the pinned ones"):
            c.run(PROMPT)
    assert transport.posts == 0


def test_a_commitment_whose_anchor_pins_no_verifying_key_is_refused(dirs, server):
    """The forgery of the review: an anchor with vk_hash null would let any adapter's delta verify."""
    def empty(doc):
        for mod in doc["modules"]:
            for anchor in mod["anchors"]:
                anchor["vk_hash"] = None
        return doc

    emptied = empty(httpx.get(f"{server.url}/v1/commitment").json())
    with pytest.raises(ValueError, match="pins no verifying key"):
        m.AdapterCommitment.model_validate(emptied)
    transport = Rewrite({"/v1/commitment": empty, "/v1/manifest": lambda d: d | {"commitment_id": "0" * 64}})
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], transport=transport) as c:
        with pytest.raises(ContributorError, match="pins no verifying key"):
            c.run(PROMPT)
    assert transport.posts == 0


def test_pin_anchor_refuses_an_anchor_without_what_its_binding_needs(dirs, server):
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url]) as c:
        c.connect()
        session, info = c.sessions[0], c.sessions[0].manifest.modules[0]
        assert c.pin_anchor(session, info, 3).vk_hash == session.commitment.anchor(info.name, 4).vk_hash
        with pytest.raises(ContributorError, match="exceed the largest committed T"):
            c.pin_anchor(session, info, 17)
        # an anchor emptied after the commitment was parsed (e.g. by a bug elsewhere) is still refused here
        mod = session.commitment.modules[0]
        hollow = mod.anchors[0].model_copy(update={"vk_hash": None})
        session.commitment = session.commitment.model_copy(update={"modules": [
            mod.model_copy(update={"anchors": [hollow, *mod.anchors[1:]]}), *session.commitment.modules[1:]]})
        with pytest.raises(ContributorError, match="pins no verifying key"):
            c.pin_anchor(session, info, 3)


@pytest.mark.parametrize("where", ["manifest", "commitment"])
def test_a_rescaled_delta_is_refused(dirs, server, published, where):
    """×10 scaling with a consistent delta: refused whether only the manifest says so (it differs from the pinned
    commitment) or the commitment too (then it is not the pinned commitment)."""
    def scale(module):
        return module | {"dequantisation": module["dequantisation"] | {"scaling": module["dequantisation"]["scaling"]
                                                                        * 10}}

    def scaled_manifest(doc):
        return doc | {"modules": [scale(mod) | {"scaling": mod["scaling"] * 10} for mod in doc["modules"]]}

    rules = {"/v1/manifest": scaled_manifest}
    if where == "commitment":
        honest = httpx.get(f"{server.url}/v1/commitment").json()
        forged = honest | {"modules": [scale(mod) for mod in honest["modules"]]}
        rules = {"/v1/commitment": lambda d: forged,
                 "/v1/manifest": lambda d: scaled_manifest(d) | {"commitment_id": commitment_id(forged)}}
    transport = Rewrite(rules)
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=transport) as c:
        with pytest.raises(ContributorError, match="differs from the committed one|none of the pinned ones"):
            c.run(PROMPT)
    assert transport.posts == 0


def test_a_late_anchor_for_a_new_t_is_never_fetched_and_an_uncommitted_t_is_refused(dirs, server, other_server,
                                                                                    published):
    """A second prompt length reuses the pinned commitment (zero-padded rows), and a proof at a T the contributor
    never committed to, or made by another adapter for the new length, fails."""
    transport = Rewrite()
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=transport) as c:
        first = c.run(PROMPT)
        second = c.run(PROMPT[:3] + [8, 9])                 # T = 5: proven at the committed T = 16
    assert first.verified and second.verified, [(r.label, r.reason) for r in second.calls]
    assert {r.statement_id for r in second.calls} == {
        read_commitment(published).module(C_ATTN[0]).statement.statement(16).id,
        read_commitment(published).module(C_ATTN[1]).statement.statement(16).id}
    # the other adapter's honest proofs for the new length, relayed as the pinned server's
    redirect = Rewrite(redirect=(server.url, other_server.url))
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published]) as c:
        c.connect()
        c.http = httpx.Client(transport=redirect)
        relayed = c.run(PROMPT[:3] + [8, 9])
    assert not relayed.verified
    assert all("verifying key differs from the pinned one" in r.reason for r in relayed.calls), [r.reason for r in relayed.calls]

    def uncommitted(doc):
        if doc.get("scope"):
            doc["scope"]["tokens"] = 8
        return doc

    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=Rewrite({"": uncommitted})) as c:
        result = c.run(PROMPT)
    assert not result.verified and all("never committed to" in r.reason for r in result.calls)


class SwapKey(httpx.HTTPTransport):
    """Forwards every request, but answers a verifying-key fetch with other bytes; counts the fetches."""

    def __init__(self, key: bytes | None):
        super().__init__()
        self.key, self.fetches = key, 0

    def handle_request(self, request):
        if request.url.path.startswith("/v1/keys/"):
            self.fetches += 1
            if self.key is not None:
                return httpx.Response(200, headers={"content-type": "application/octet-stream"}, content=self.key)
        return super().handle_request(request)


def test_verifying_keys_are_served_once_by_hash_and_checked(dirs, server, published):
    """A proof in an answer names its key by hash; the key is fetched once per contributor, only when the
    commitment pins it, and refused if its bytes have another hash."""
    assert httpx.get(f"{server.url}/v1/keys/{'0' * 64}").json()["error"]["code"] == "unknown_key"
    honest = SwapKey(None)
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=honest) as c:
        first, second = c.run(PROMPT), c.run(PROMPT)
    assert first.verified and second.verified, [r.reason for r in second.calls]
    assert honest.fetches == len(C_ATTN)                     # one key per module at T = 4, fetched once
    call_id = first.calls[0].call_id
    answer = httpx.get(f"{server.url}/v1/calls/{call_id}").json()
    assert answer["proof"]["vk"] == ""
    vk_hash = answer["proof"]["vk_hash"]
    key = httpx.get(f"{server.url}/v1/keys/{vk_hash}")
    assert key.status_code == 200 and hashlib.sha256(key.content).hexdigest() == vk_hash
    assert vk_hash == read_commitment(published).anchor(first.calls[0].module, 4).vk_hash

    swapped = SwapKey(key.content + b"\0")
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=swapped) as c:
        result = c.run(PROMPT)
    assert not result.verified and all("has another hash" in r.reason for r in result.calls), \
        [r.reason for r in result.calls]


def test_a_server_that_changes_its_commitment_cannot_serve_a_pinned_client(dirs, server, published):
    """--publish: an existing file must hold this server's commitment, so a restarted contributor cannot silently
    publish another one under the same name (clients pinned to the file would refuse it anyway)."""
    from zkref.cli.serve import _write_published

    other = dirs["root"] / "other.json"
    other.write_text("{}")
    commitment = read_commitment(published)
    with pytest.raises(ValueError, match="another adapter commitment"):
        _write_published(other, commitment)
    _write_published(published, commitment)          # the same commitment: accepted, file unchanged
    assert read_commitment(published).id == commitment.id


# ----------------------------------------------------------------------------------------------------------------------
# Batched and padded rows
# ----------------------------------------------------------------------------------------------------------------------

def test_a_sessions_calls_are_proven_together_and_each_verified(dirs, server, published):
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published]) as c:
        result = c.generate(PROMPT, 4)
    assert result.verified, [(r.label, r.reason) for r in result.calls]
    assert len(result.generated_ids) == 4 and len(result.calls) == 2 * 4      # prompt + 3 steps, 2 modules
    by_module = {name: [r for r in result.calls if r.module == name] for name in C_ATTN}
    for calls in by_module.values():
        assert len({r.proof_id for r in calls}) < len(calls)                   # some share one proof
        assert max(r.proven_with for r in calls) > 1
    assert result.timings["tokens_per_second"] > 0


def test_a_proof_covering_a_call_the_client_never_made_is_refused(dirs, server, published):
    def foreign(doc):
        if doc.get("scope"):
            doc["scope"]["tokens"] = 16
            doc["scope"]["calls"].append({"call_id": "f" * 32, "start": doc["scope"]["calls"][-1]["start"]
                                          + doc["scope"]["calls"][-1]["tokens"], "tokens": 1})
        return doc

    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], anchors=[published],
                         transport=Rewrite({"": foreign})) as c:
        result = c.run(PROMPT)
    assert not result.verified and all("never made" in r.reason for r in result.calls)


def test_scope_invariants():
    rows = [m.ScopeRows(call_id="a" * 32, start=0, tokens=2), m.ScopeRows(call_id="b" * 32, start=2, tokens=1)]
    m.ProofScope(module="m", tokens=4, statement_id="c" * 32, calls=rows)
    with pytest.raises(ValueError, match="consecutive rows"):
        m.ProofScope(module="m", tokens=4, statement_id="c" * 32, calls=rows[1:])
    with pytest.raises(ValueError, match="exceed"):
        m.ProofScope(module="m", tokens=2, statement_id="c" * 32, calls=rows)
    with pytest.raises(ValueError, match="twice"):
        m.ProofScope(module="m", tokens=4, statement_id="c" * 32,
                     calls=[rows[0], m.ScopeRows(call_id="a" * 32, start=2, tokens=1)])


# ----------------------------------------------------------------------------------------------------------------------
# Hostile answers: bounded, refused clearly
# ----------------------------------------------------------------------------------------------------------------------

def test_deeply_nested_proof_json_is_a_verdict_not_a_recursion_error():
    """(The EZKL backend's row is in tests/test_ezkl_backend.py's tamper matrix.)"""
    backend = get_backend("zkref")
    statement = LoRAStatement(shape=LoRAShape(d_in=4, d_out=3, rank=2, tokens=1), shift=2)
    rng = np.random.default_rng(0)
    witness = LoRAWitness(A_q=rng.integers(-8, 8, (2, 4)), B_q=rng.integers(-8, 8, (3, 2)),
                          x_q=rng.integers(-128, 128, (1, 4)))
    result = backend.prove(statement, witness)
    anchor = backend.anchor(statement, witness)
    assert backend.verify(statement, result.public, result.proof, anchor=anchor)
    deep = dataclasses.replace(result.proof, data=b"[" * 200_000 + b"]" * 200_000)
    verdict = backend.verify(statement, result.public, deep, anchor=anchor)
    assert not verdict and "nested 200000 levels deep" in verdict.reason, verdict.reason
    for hollow in (None, dataclasses.replace(anchor, vk_hash=None)):
        verdict = backend.verify(statement, result.public, result.proof, anchor=hollow)
        assert not verdict and ("no adapter anchor pinned" in verdict.reason
                                or "pins no verifying key" in verdict.reason), verdict.reason


def test_deeply_nested_proof_from_a_server_fails_that_call_only(dirs, server):
    def deep(doc):
        if doc.get("proof"):
            doc["proof"]["data"] = base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
        return doc

    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], transport=Rewrite({"": deep})) as c:
        result = c.run(PROMPT)
    assert not result.verified and all("nested" in r.reason for r in result.calls)


def test_a_binding_the_verifier_cannot_check_is_refused_at_connect(dirs, server):
    """A commitment declaring packed Poseidon bindings for the EZKL backend (which has none): refused with a clear
    reason before any activation, not a ValueError from deep inside verification."""
    honest = httpx.get(f"{server.url}/v1/commitment").json()
    manifest = httpx.get(f"{server.url}/v1/manifest").json()
    forged = json.loads(json.dumps(honest))
    forged["backend"] = "ezkl"
    for mod in forged["modules"]:
        mod["statement"]["x_binding"] = "hashed-packed"
        mod["anchors"] = [{"backend": "ezkl", "vk_hash": "a" * 64, "commitment": None, "digest": None,
                           "statement_id": m.StatementTemplate.model_validate(mod["statement"]).statement(t).id}
                          for t in forged["tokens"]]
    forged_manifest = manifest | {"backend": manifest["backend"] | {"name": "ezkl", "zero_knowledge": True},
                                  "commitment_id": commitment_id(forged),
                                  "modules": [mod | {"statement": f["statement"]}
                                              for mod, f in zip(manifest["modules"], forged["modules"])]}
    transport = Rewrite({"/v1/commitment": lambda d: forged, "/v1/manifest": lambda d: forged_manifest})
    with BaseModelClient(base_dir=dirs["base"], contributors=[server.url], transport=transport) as c:
        with pytest.raises(ContributorError, match="cannot check it"):
            c.run(PROMPT)
    assert transport.posts == 0


def test_retry_after_zero_backs_off_instead_of_busy_looping(dirs):
    seen = []

    def always_busy(request):
        seen.append(time.monotonic())
        return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"status": 429, "code": "queue_full",
                                                                                 "message": "busy"}})

    client = BaseModelClient(base_dir=dirs["base"], contributors=["http://127.0.0.1:9"],
                             transport=httpx.MockTransport(always_busy))
    with pytest.raises(ContributorError, match="HTTP 429"):
        client._request(Endpoint(url="http://127.0.0.1:9"), "GET", "/v1/manifest", limit=1 << 20,
                        deadline=time.monotonic() + 1.5)
    assert len(seen) <= 6, len(seen)                            # 0.1 + 0.2 + 0.4 + 0.8 s: five requests
    gaps = np.diff(seen)
    assert gaps.min() >= RETRY_MIN_SECONDS * 0.9 and np.all(np.diff(gaps) > 0)
    assert retry_delay("0", 0) == RETRY_MIN_SECONDS and retry_delay("3", 0) == 3.0
    assert retry_delay("99999999", 40) == RETRY_MAX_SECONDS and retry_delay("-1", 1) == 2 * RETRY_MIN_SECONDS


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------

def test_cli_client_with_anchors_refuses_another_contributor(dirs, other_server, published, capsys):
    code = main(["client", "--base", str(dirs["base"]), "--contributor", other_server.url, "--prompt-ids", "1,2,3",
                 "--anchors", str(published)])
    err = capsys.readouterr().err
    assert code == 2 and "none of the pinned ones" in err and "Traceback" not in err


def test_cli_client_saves_then_pins_a_commitment(dirs, server, capsys, tmp_path):
    saved = tmp_path / "pinned.json"
    assert main(["client", "--base", str(dirs["base"]), "--contributor", server.url, "--prompt-ids", "1,2,3",
                 "--save-anchors", str(saved)]) == 0
    assert main(["client", "--base", str(dirs["base"]), "--contributor", server.url, "--prompt-ids", "1,2",
                 "--anchors", str(saved), "--generate", "2"]) == 0
    out = capsys.readouterr().out
    assert "pinned from --anchors" in out and "generated 2 tokens" in out
    assert main(["client", "--base", str(dirs["base"]), "--contributor", server.url, "--prompt-ids", "1",
                 "--save-anchors", str(saved)]) == 2                  # never overwritten


def test_publish_commitment_refuses_a_t_the_backend_cannot_prove(dirs):
    """EZKL with public x and y cannot hold T = 4096 rows of instances: the server refuses to start, naming it."""
    pytest.importorskip("ezkl")
    contributor = load_contributor(base_dir=dirs["base"], adapter_dir=dirs["adapter"], shift=5)
    config = ServerConfig(backend="ezkl", max_tokens=4096, token_buckets=(4096,), max_queue=8, max_results=16)
    with pytest.raises(ValueError, match="cannot prove .* at T=4096"):
        publish_commitment(contributor, config)
