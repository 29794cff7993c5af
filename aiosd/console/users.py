"""Users and their tokens, sans-IO: names, roles, token minting and checking.

A token is `aiosu.<name>.<secret>` (secret: 32 random bytes, urlsafe base64). The registry keeps only
sha256(token) in the user's record, so a copy of the registry gives no one a token; a presented token
is hashed and compared with hmac.compare_digest. Revoking sets `revoked_at` (the record stays, so
`user list` shows it); a revoked user can be created again, with a new token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any, Literal

from pydantic import Field, ValidationError

from aiosd.console.errors import ConsoleError
from federation.strict import Wire

TOKEN_PREFIX = "aiosu"
SECRET_BYTES = 32
NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"
MAX_TOKEN_LEN = 256

UserRole = Literal["admin", "operator", "viewer", "inference"]


class NewUser(Wire):
    """Body of POST /v1/users."""

    name: str = Field(pattern=NAME_RE)
    role: UserRole


class UserRecord(Wire):
    """A `users` registry record (key: the name)."""

    name: str = Field(pattern=NAME_RE)
    role: UserRole
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: float
    created_by: str = Field(max_length=128)
    revoked_at: float | None = None
    revoked_by: str | None = Field(None, max_length=128)

    def public(self) -> dict[str, Any]:
        """What `user list` shows: everything but the token hash."""
        return self.model_dump(exclude={"token_sha256"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint_token(name: str, secret: bytes) -> str:
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a token secret is {SECRET_BYTES} bytes")
    return f"{TOKEN_PREFIX}.{name}.{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"


def token_user(token: str) -> str | None:
    """The user name a token claims, or None when it is not a user token at all."""
    if len(token) > MAX_TOKEN_LEN:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not re.match(NAME_RE, parts[1]):
        return None
    return parts[1]


def record_of(value: dict[str, Any]) -> UserRecord | None:
    """A registry value as a user record; None when it is not a valid one (ignored, never trusted)."""
    try:
        return UserRecord.model_validate(value)
    except ValidationError:
        return None


def token_matches(rec: UserRecord, token: str) -> bool:
    """The token is this live user's (constant-time on the hash)."""
    return rec.revoked_at is None and hmac.compare_digest(rec.token_sha256, hash_token(token))


def new_record(body: NewUser, token: str, *, now: float, by: str, old: UserRecord | None) -> UserRecord:
    if old is not None and old.revoked_at is None:
        raise ConsoleError(f"user {body.name!r} exists ({old.role}); revoke it first to issue a new token",
                           field="name", status=409)
    return UserRecord(name=body.name, role=body.role, token_sha256=hash_token(token), created_at=now,
                      created_by=by)


def revoked(rec: UserRecord, *, now: float, by: str) -> UserRecord:
    if rec.revoked_at is not None:
        raise ConsoleError(f"user {rec.name!r} is already revoked", field="name", status=409)
    return rec.model_copy(update={"revoked_at": now, "revoked_by": by})


__all__ = ["NewUser", "UserRecord", "hash_token", "mint_token", "new_record", "record_of", "revoked",
           "token_matches", "token_user"]
