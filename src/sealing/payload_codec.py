"""Encrypting workflow payloads (messages, tool arguments, prompts) in Temporal history.

An AES-256-GCM `PayloadCodec`: every payload becomes `binary/encrypted` with the key id in
its metadata, so keys rotate (the first key encrypts, all decrypt). The Temporal server and its
database only ever see ciphertext; the API's codec endpoint lets the Temporal UI show plain
text to operators.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from src.sealing.state_envelope import StateKey

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class PayloadDecryptionError(Exception):
    pass


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[StateKey]) -> None:
        if not keys:
            raise ValueError("at least one payload key is needed")
        self._key_id = keys[0].key_id
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._key_id]
        encoded = []
        for payload in payloads:
            nonce = secrets.token_bytes(_NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), self._key_id.encode())
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self._key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding", b"") != ENCODING:
                decoded.append(payload)  # written before encryption was switched on
                continue
            decoded.append(self._open(payload))
        return decoded

    def _open(self, payload: Payload) -> Payload:
        try:
            key_id = payload.metadata.get(KEY_ID, b"").decode()
        except UnicodeDecodeError:
            raise PayloadDecryptionError("a payload's key id is not UTF-8 text") from None
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(f"no payload key {key_id!r} on this server")
        if len(payload.data) < _NONCE_BYTES + _TAG_BYTES:
            raise PayloadDecryptionError("a payload is too short to be AES-GCM ciphertext")
        try:
            plain = cipher.decrypt(
                payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], key_id.encode()
            )
        except InvalidTag:
            raise PayloadDecryptionError("a payload failed authentication") from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError("a decrypted payload is not a Temporal payload") from None
