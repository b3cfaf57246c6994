"""The contributor protocol (specs/protocol.md): a contributor serves a private peft LoRA adapter over HTTP, answers
each call with the adapter's output at once and proves it in the background; a base-model user runs its own base
model, adds the deltas, and verifies every call's proof against what it sent and received.

    tensors      safetensors on the wire, decoded strictly (never pickle)
    messages     one bounded pydantic model per message and round
    contributor  load base model + adapter, calibrate once, fix every statement
    provers      the proving job and where it runs: a local process pool or Ray
    server       the FastAPI application: bounds, queue, result store
    client       BaseModelClient

Layering: imports zkref.pipeline, zkref.lora, zkref.models, backends and lower layers; only zkref.cli imports it.
"""
