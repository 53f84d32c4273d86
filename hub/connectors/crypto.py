"""Encrypting stored secrets with AES-256-GCM (``FLUX_ENCRYPTION_KEY``), as Flux does.

A sealed value is ``version (1 byte) | nonce (12 bytes) | ciphertext and tag``. The
nonce is random per value (96 bits: safe for far more values than a hub stores). Each
value is bound to where it is stored by the *associated data* (for example
``cred:github:<user>``), so a blob copied to another user's or poller's slot in Redis
does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError

__all__ = ["UNDECRYPTABLE", "SecretBox"]

_VERSION = b"\x01"
_NONCE_BYTES = 12


#: Why :meth:`SecretBox.open` returned None, for status and error messages.
UNDECRYPTABLE = "cannot be decrypted with the current FLUX_ENCRYPTION_KEY (was it changed?)"


class SecretBox:
    """Seals and opens values with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        """Build from ``FLUX_ENCRYPTION_KEY``: base64 of 32 bytes.

        Raises:
            ConfigError: the text is not base64 of exactly 32 bytes. (Flux silently
                disables its connectors then; a key that was set but cannot be used
                is a mistake worth stopping for.)
        """
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                "FLUX_ENCRYPTION_KEY: not valid base64 (expected base64 of 32 random bytes,"
                " e.g. from `openssl rand -base64 32`)"
            ) from None
        if len(key) != 32:
            raise ConfigError(
                f"FLUX_ENCRYPTION_KEY: decodes to {len(key)} bytes, AES-256 needs 32"
                " (e.g. `openssl rand -base64 32`)"
            )
        return cls(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt ``plaintext`` for the slot named ``context``."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes | None:
        """Decrypt a value sealed for ``context``.

        Returns:
            The plaintext; None for a wrong key, a wrong context or damaged data
            (see :data:`UNDECRYPTABLE`).
        """
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            return None
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], context.encode())
        except InvalidTag:
            return None
