"""Security test fixtures: a fresh key list per test (never the developer's ./var/secret.keys)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkchange.security import crypto
from bulkchange.store.migrate import upgrade


@pytest.fixture
def secret_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """BULKCHANGE_SECRET_KEYS set to one new key; the process keyring reloaded before and after."""
    keys = [crypto.generate_key()]
    monkeypatch.setenv(crypto.KEYS_ENV, ",".join(keys))
    crypto.reset_keyring()
    yield keys
    crypto.reset_keyring()


def use_keys(monkeypatch: pytest.MonkeyPatch, keys: list[str]) -> None:
    monkeypatch.setenv(crypto.KEYS_ENV, ",".join(keys))
    crypto.reset_keyring()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/security.sqlite3"
    upgrade(url)
    return url
