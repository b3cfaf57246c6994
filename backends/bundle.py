"""The proof bundle: one directory holding a statement, its public values and a backend's proof (specs/proof-bundle.md).

Written atomically (a temporary sibling directory renamed into place; an existing non-empty directory is never
overwritten) and read strictly: every file is size-bounded before it is read, every JSON object has exactly its keys,
and nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backends.base import MAX_PROOF_BYTES, AdapterAnchor, Proof, ProofResult, canonical_json, sha256_hex
from zkref.lora.statement import LoRAPublic, LoRAStatement
from zkref.primitives.field import felt_from_str, felt_to_str

FORMAT = "zkref-proof-bundle/1"
FILES = ("bundle.json", "statement.json", "public.json", "proof.bin", "vk.bin", "settings.json", "anchor.json")
MAX_JSON_BYTES = 256 << 20
"""public.json of the largest supported statement (T·d values of a few characters each) stays far below this."""


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle as read back: what the verifier needs, and the prover's claimed anchor and metadata."""

    statement: LoRAStatement
    public: LoRAPublic
    proof: Proof
    anchor: AdapterAnchor
    meta: dict


def write_bundle(directory: str | Path, statement: LoRAStatement, result: ProofResult, anchor: AdapterAnchor,
                 meta: dict) -> Path:
    """Write a bundle to `directory` (which must not exist or be empty); returns its path."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} exists and is not an empty directory: refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    proof = result.proof
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        header = {"format": FORMAT, "backend": proof.backend, "statement_id": statement.id,
                  "zero_knowledge": proof.zero_knowledge, "instances": [felt_to_str(v) for v in proof.instances],
                  "vk_hash": proof.vk_hash, "proof_sha256": sha256_hex(proof.data), "commitments": proof.commitments,
                  "meta": meta | {"proof_meta": proof.meta, "timings": result.timings}}
        files = {
            "bundle.json": canonical_json(header),
            "statement.json": canonical_json(statement.canonical() | {"id": statement.id}),
            "public.json": canonical_json(result.public.to_json()),
            "proof.bin": proof.data,
            "vk.bin": proof.vk,
            "settings.json": canonical_json(proof.settings),
            "anchor.json": canonical_json(anchor.to_json()),
        }
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _read(directory: Path, name: str, limit: int) -> bytes:
    path = directory / name
    if not path.is_file():
        raise ValueError(f"{directory}: {name} is missing (not a proof bundle?)")
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes is more than the {limit:,} allowed")
    return path.read_bytes()


def _json(directory: Path, name: str) -> object:
    try:
        return json.loads(_read(directory, name, MAX_JSON_BYTES))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory / name}: not valid JSON ({exc})") from None


def read_bundle(directory: str | Path) -> Bundle:
    """Read and validate a bundle; ValueError with the reason if anything is malformed."""
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{d}: no such bundle directory")
    header = _json(d, "bundle.json")
    keys = {"format", "backend", "statement_id", "zero_knowledge", "instances", "vk_hash", "proof_sha256",
            "commitments", "meta"}
    if not isinstance(header, dict) or set(header) != keys:
        raise ValueError(f"{d / 'bundle.json'}: expected keys {', '.join(sorted(keys))}")
    if header["format"] != FORMAT:
        raise ValueError(f"{d}: bundle format {header['format']!r} is not {FORMAT!r}")
    doc = _json(d, "statement.json")
    if not isinstance(doc, dict) or "id" not in doc:
        raise ValueError(f"{d / 'statement.json'}: expected the canonical statement and its id")
    claimed_id = doc.pop("id")
    statement = LoRAStatement.from_canonical(doc)
    if statement.id != claimed_id or header["statement_id"] != claimed_id:
        raise ValueError(f"{d}: statement id {claimed_id!r} does not match the statement ({statement.id})")
    public = LoRAPublic.from_json(statement, _json(d, "public.json"))
    if not isinstance(header["instances"], list) or not all(isinstance(v, str) for v in header["instances"]):
        raise ValueError(f"{d / 'bundle.json'}: instances must be a list of felt strings")
    data = _read(d, "proof.bin", MAX_PROOF_BYTES)
    if sha256_hex(data) != header["proof_sha256"]:
        raise ValueError(f"{d / 'proof.bin'}: does not match the SHA-256 recorded in bundle.json")
    settings = _json(d, "settings.json")
    commitments = header["commitments"]
    if not isinstance(settings, dict) or not isinstance(commitments, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in commitments.items()):
        raise ValueError(f"{d}: settings and commitments must be JSON objects (commitments of strings)")
    for name in ("backend", "vk_hash"):
        if header[name] is not None and not isinstance(header[name], str):
            raise ValueError(f"{d / 'bundle.json'}: {name} must be a string")
    proof = Proof(backend=header["backend"], statement_id=header["statement_id"],
                  instances=tuple(felt_from_str(v) for v in header["instances"]), data=data,
                  zero_knowledge=bool(header["zero_knowledge"]), vk=_read(d, "vk.bin", MAX_PROOF_BYTES),
                  vk_hash=header["vk_hash"], settings=settings, commitments=commitments,
                  meta=header["meta"] if isinstance(header["meta"], dict) else {})
    return Bundle(statement, public, proof, AdapterAnchor.from_json(_json(d, "anchor.json")), proof.meta)
