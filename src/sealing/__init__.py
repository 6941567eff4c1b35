"""Everything Parley encrypts (AES-256-GCM, keys by id in rings): workflow payloads in Temporal
history (`payload_codec.py`), tenant secrets at rest (`secret_box.py`, re-sealed by
`secret_storage.py`) and the opaque state of stateless conversations (`state_envelope.py`)."""
