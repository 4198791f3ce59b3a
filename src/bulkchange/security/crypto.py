"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key list for rotation (``MultiFernet``).

Keys come from, in this order:

1. ``BULKCHANGE_SECRET_KEYS`` — comma-separated Fernet keys; the **first encrypts**, every key decrypts, so
   a rotation is "put the new key first, run ``bulkchange credentials rotate``, drop the old key". The
   value may also be an ``ssm:/…`` or ``secretsmanager:…`` reference (resolved once through boto3).
2. ``BULKCHANGE_SECRET_KEY_FILE`` — a file holding the same comma-separated list (one per line is fine).
3. Nothing configured: ``secret.keys`` in the user's data directory (``settings.user_data_dir``) is used,
   and generated (mode 0600) when it does not exist —
   a laptop or the embedded default is never blocked and never stores plaintext. A warning says so.

A stored secret is ``enc:v1:<Fernet token>``; a value without the prefix is either a reference
(``ssm:`` / ``secretsmanager:``, stored as is: it is not a secret) or a legacy plaintext row, which keeps
working and is encrypted by ``bulkchange credentials rotate`` / ``set``.

``EncryptedSecret`` is the column type of the secret columns: it encrypts on every write (ORM, Core
insert / update) and returns the stored text unchanged on read, so a decrypted secret exists only where a
connection is built (``reveal``).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import NVARCHAR, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from bulkchange.security.redaction import register_secret
from bulkchange.security.references import CredentialResolver
from bulkchange.settings import user_data_dir

# Every import of the tables imports this module (for ``EncryptedSecret``), but only a process that
# encrypts or decrypts a secret needs ``cryptography``, and only one that generates or reads the key file
# logs: both are imported where they are used, so that a command which only reads bulk changes
# (``bulkchange status``) loads neither (structlog alone is a twentieth of a second, rich's pretty-printer
# and traceback modules with it; tests/cli/test_startup.py holds both out).
if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet


def _warn(event: str, **fields: Any) -> None:
    import structlog  # see above: imported by the rare warning, not by every import of the tables

    structlog.get_logger("bulkchange.security").warning(event, **fields)


PREFIX = "enc:v1:"
KEYS_ENV = "BULKCHANGE_SECRET_KEYS"
KEY_FILE_ENV = "BULKCHANGE_SECRET_KEY_FILE"


def default_key_file() -> Path:
    """Next to the default database, in the user's data directory: the same keys whatever the working
    directory of the command that needs them."""
    return user_data_dir() / "secret.keys"


_REFERENCE_PREFIXES = ("ssm:", "secretsmanager:")


class SecretKeyError(RuntimeError):
    """No usable key, a malformed key, or a stored secret that no configured key decrypts."""


def is_reference(value: str) -> bool:
    return value.startswith(_REFERENCE_PREFIXES)


def is_encrypted(value: str | None) -> bool:
    return bool(value) and str(value).startswith(PREFIX)


def encrypted_length(plaintext_bytes: int) -> int:
    """Characters ``enc:v1:<Fernet token>`` takes for a secret of ``plaintext_bytes`` UTF-8 bytes.

    A token is 57 bytes (version, timestamp, IV, HMAC) plus the AES-CBC ciphertext (PKCS7-padded to the
    next 16-byte block), in padded url-safe base64.
    """
    return len(PREFIX) + 4 * math.ceil((57 + 16 * (plaintext_bytes // 16 + 1)) / 3)


def max_plaintext_bytes(column_length: int) -> int:
    """The longest secret (UTF-8 bytes) whose encrypted form fits a column of ``column_length``."""
    n = 0
    while encrypted_length(n + 1) <= column_length:
        n += 1
    return n if encrypted_length(n) <= column_length else -1


def generate_key() -> str:
    from cryptography.fernet import Fernet  # on use (see the imports above)

    return Fernet.generate_key().decode("ascii")


@dataclass(frozen=True)
class Keyring:
    """The configured keys (first one encrypts) and where they came from (for messages, never the keys)."""

    keys: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        from cryptography.fernet import Fernet  # on use (see the imports above)

        if not self.keys:
            raise SecretKeyError(f"no secret key in {self.source}")
        for i, key in enumerate(self.keys):
            try:
                Fernet(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError) as exc:
                raise SecretKeyError(
                    f"secret key #{i + 1} from {self.source} is not a Fernet key (32 url-safe base64 bytes; "
                    "make one with `bulkchange credentials generate-key`)"
                ) from exc

    @property
    def _fernet(self) -> MultiFernet:
        from cryptography.fernet import Fernet, MultiFernet  # on use (see the imports above)

        return MultiFernet([Fernet(k.encode("ascii")) for k in self.keys])

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plaintext of ``enc:v1:…``; any other value is returned unchanged (reference or legacy row)."""
        from cryptography.fernet import InvalidToken  # on use (see the imports above)

        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with the {len(self.keys)} key(s) from {self.source} "
                f"(was it encrypted with a key that is no longer configured in {KEYS_ENV}?)"
            ) from exc

    def is_current(self, stored: str) -> bool:
        """Encrypted with the first (current) key."""
        from cryptography.fernet import Fernet, InvalidToken  # on use (see the imports above)

        if not stored.startswith(PREFIX):
            return False
        try:
            Fernet(self.keys[0].encode("ascii")).decrypt(stored[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            return False
        return True


_lock = threading.Lock()
_keyring: Keyring | None = None


def _split(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.replace("\n", ",").split(",") if k.strip())


def _from_reference(reference: str) -> str:
    return CredentialResolver(ttl_s=0).resolve(reference)


def _generate_file(path: Path) -> None:
    """Create ``path`` with one new key, mode 0600, atomically (two processes starting at once agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (generate_key() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs is kept
        _warn(
            "no secret key configured: generated one for encrypting credentials at rest; keep it safe and back "
            f"it up (losing it means re-entering every credential), or set {KEYS_ENV}",
            key_file=str(path.resolve()),
        )
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def load_keyring(environ: dict[str, str] | None = None) -> Keyring:
    """Read the keys as the module docstring says (generating the default file when nothing is set)."""
    env = os.environ if environ is None else environ
    configured = env.get(KEYS_ENV, "").strip()
    if configured:
        if is_reference(configured):
            return Keyring(_split(_from_reference(configured)), f"{KEYS_ENV} ({configured})")
        return Keyring(_split(configured), KEYS_ENV)
    file_name = env.get(KEY_FILE_ENV, "").strip()
    path = Path(file_name) if file_name else default_key_file()
    if not path.exists():
        if file_name:
            raise SecretKeyError(f"{KEY_FILE_ENV} names {path}, which does not exist")
        _generate_file(path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        _warn("secret key file is readable by others; chmod 600 it", key_file=str(path), mode=oct(mode))
    return Keyring(_split(path.read_text(encoding="ascii")), str(path))


def keyring() -> Keyring:
    """The process's keyring, loaded on first use."""
    global _keyring
    with _lock:
        if _keyring is None:
            _keyring = load_keyring()
        return _keyring


def reset_keyring(value: Keyring | None = None) -> None:
    """Forget the loaded keys (tests; after a rotation in this process), or install ``value``."""
    global _keyring
    with _lock:
        _keyring = value


def encrypt(plaintext: str) -> str:
    """``enc:v1:…`` for a secret; a reference, an empty value or an already encrypted one unchanged."""
    if not plaintext or is_reference(plaintext) or plaintext.startswith(PREFIX):
        return plaintext
    return keyring().encrypt(plaintext)


def reveal(stored: str) -> str:
    """The value to use: decrypted when encrypted; references and legacy plaintext unchanged.

    Every decrypted value is registered with the redaction layer, so it is masked wherever it might
    appear in a log line or a log row.
    """
    if not stored.startswith(PREFIX):
        if stored and not is_reference(stored):
            register_secret(stored)
        return stored
    plaintext = keyring().decrypt(stored)
    register_secret(plaintext)
    return plaintext


class EncryptedSecret(TypeDecorator[str]):
    """A secret column: ``VARCHAR(length)`` (``NVARCHAR`` on SQL Server) written encrypted, read as stored.

    The ciphertext of a secret of ``n`` characters takes about ``4/3 · (n + 73) + 7`` characters, so a
    500-character column holds secrets up to about 300 characters; a longer one is refused on write.
    """

    impl = String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "mssql":
            return dialect.type_descriptor(NVARCHAR(self.length))
        return dialect.type_descriptor(String(self.length))

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        stored = encrypt(value)
        if len(stored) > self.length:
            raise SecretKeyError(
                f"the encrypted secret takes {len(stored)} characters; the column holds {self.length} "
                "(store a reference such as ssm:/path instead)"
            )
        return stored

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return value

    def copy(self, **kw: Any) -> EncryptedSecret:
        return EncryptedSecret(self.length)
