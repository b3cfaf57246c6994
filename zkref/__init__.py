"""zkref: a readable PLONKish reference for verifiable LoRA inference."""
