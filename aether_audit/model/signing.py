"""Signing a manifest with an NKey (ed25519) and checking the signature.

The manifest lists every file's sha256 and the chain heads, so its signature
vouches for every byte of the export. What is signed is the manifest without
its ``signature`` key, as JSON with sorted keys and no spaces (orjson); the
``signature`` key holds ``{"algorithm", "public_key", "value"}`` (base64url).
A third party needs only the public key (``U...``, ``A...``, ``O...``).

Audit checkpoints are signed with the same seeds (``sign_bytes`` /
``verify_bytes``): there the signature covers the file's bytes before it,
see ``_checkpoint``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any

import nkeys
import orjson

from .errors import AuditError, ExportError
from .files import write_atomic

__all__ = ["check_public_key", "check_signature", "load_signer", "new_seed_file", "sign_bytes", "sign_manifest",
           "signer_of", "verify_bytes"]

ALGORITHM = "ed25519-nkey"


def _signed_bytes(manifest: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in manifest.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS)


def load_signer(seed_file: str | os.PathLike[str], error: type[AuditError] = ExportError) -> Any:
    """The NKey pair of a seed file (its first line that is a seed);
    ``error`` (one line) when there is none."""
    path = Path(seed_file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read the seed file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    seed = next((line.strip() for line in text.splitlines() if line.strip().startswith("S")), "")
    try:
        return nkeys.from_seed(seed.encode())
    except Exception as exc:  # nkeys raises its own error types
        raise error(f"{path} holds no NKey seed") from exc


def new_seed_file(path: str | os.PathLike[str]) -> str:
    """Write a new NKey user seed to ``path`` and return its public key.

    The file is readable only by its owner (mode 0600 from the moment it
    exists), written atomically, and never replaces a file: an existing
    ``path`` is ``FileExistsError`` (a seed overwritten by mistake cannot be
    recovered, and every signature made with it could no longer be renewed).
    What it holds is what ``load_signer`` reads.

    Example:
        >>> public = new_seed_file("audit.nk")  # doctest: +SKIP
        >>> public.startswith("U") and load_signer("audit.nk").public_key.decode() == public  # doctest: +SKIP
        True
    """
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    target = Path(path)
    refused = FileExistsError(17, "refusing to overwrite an existing file", str(target))
    if target.exists() or target.is_symlink():  # named before any temp file is made
        raise refused
    try:
        write_atomic(target, seed + b"\n", mode=0o600, overwrite=False)
    except FileExistsError:  # made meanwhile: the link refused to replace it
        raise refused from None
    return nkeys.from_seed(seed).public_key.decode()


def check_public_key(public_key: str) -> str:
    """``public_key`` stripped, or ``ValueError`` (one line) when it is not an
    NKey public key (base32 of a public prefix, 32 bytes and a CRC16): a
    mistyped key is the caller's error, not a failed verification.

    Example:
        >>> check_public_key("UAXXXXBAD")
        Traceback (most recent call last):
        ...
        ValueError: UAXXXXBAD is not an NKey public key (a U..., A... or O... key of 56 characters)
    """
    key = public_key.strip()
    try:
        _verify_key(key)
    except ValueError:
        raise ValueError(f"{key[:60]} is not an NKey public key "
                         "(a U..., A... or O... key of 56 characters)") from None
    return key


def signer_of(sign: Any, error: type[AuditError] = ExportError) -> Any:
    """A key pair from ``sign``: a seed file's path, or a key pair already
    loaded (anything with ``sign`` and ``public_key``); None stays None."""
    if sign is None or (hasattr(sign, "sign") and hasattr(sign, "public_key")):
        return sign
    return load_signer(sign, error)


def sign_bytes(data: bytes, signer: Any) -> bytes:
    """The 64-byte ed25519 signature of ``data``.

    Example:
        >>> keys = nkeys.from_seed(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER))
        >>> verify_bytes(b"abc", sign_bytes(b"abc", keys), keys.public_key.decode()) is None
        True
    """
    return signer.sign(data)


def verify_bytes(data: bytes, signature: bytes, public_key: str) -> str | None:
    """None when ``signature`` is ``public_key``'s of exactly ``data``; else why not."""
    try:
        key = _verify_key(public_key.strip())
    except ValueError:
        return f"{public_key.strip()[:12]}... is not an NKey public key"
    try:
        key.verify(data, signature)
    except Exception:  # nacl's BadSignatureError, or a signature of the wrong size
        return "the signature does not match: the bytes were changed after signing"
    return None


def _verify_key(public_key: str) -> Any:
    """The ed25519 key of an NKey public key (base32: prefix, 32 bytes, CRC16)."""
    import binascii

    import nacl.signing

    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(public_key) from exc
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise ValueError(public_key)
    if raw[-2:] != nkeys.crc16_checksum(raw[:-2]):
        raise ValueError(public_key)
    return nacl.signing.VerifyKey(raw[1:-2])


def sign_manifest(manifest: dict[str, Any], signer: Any) -> dict[str, Any]:
    """The manifest with its ``signature``.

    Example:
        >>> keys = nkeys.from_seed(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER))
        >>> signed = sign_manifest({"stream": "events"}, keys)
        >>> check_signature(signed, keys.public_key.decode())
    """
    value = base64.urlsafe_b64encode(signer.sign(_signed_bytes(manifest))).decode()
    return dict(manifest, signature={"algorithm": ALGORITHM, "public_key": signer.public_key.decode(), "value": value})


def check_signature(manifest: dict[str, Any], public_key: str) -> str | None:
    """None when ``public_key`` signed exactly this manifest; else why not."""
    signature = manifest.get("signature")
    if not isinstance(signature, dict) or "value" not in signature:
        return "the manifest is not signed"
    try:
        value = base64.urlsafe_b64decode(signature["value"])
    except Exception:  # not base64, or not text at all
        value = b""
    why = verify_bytes(_signed_bytes(manifest), value, public_key)
    if why is None or not why.startswith("the signature"):
        return why
    signer = signature.get("public_key", "?")
    if signer != public_key.strip():
        return f"the manifest is signed by {signer}, not by {public_key.strip()}"
    return "the signature does not match the manifest: it was changed after signing"
