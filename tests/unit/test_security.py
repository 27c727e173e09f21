"""Security defaults of `serving.server` without a server: the command line restricts the
administrative APIs to the admin key's header, and the key comes from `$T5QA_ADMIN_KEY` (validated)
or is a fresh random one per start. Against a running server: `tests/server/test_security.py`."""
from __future__ import annotations

import pytest

from serving.server import ADMIN_HEADER, ADMIN_KEY_ENV, RESTRICTED_APIS, TritonServer, resolve_admin_key


def test_flags_cover_the_restricted_apis(tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_KEY_ENV, "k" * 32)
    command = TritonServer(tmp_path).command()
    apis = ",".join(RESTRICTED_APIS)
    assert f"--http-restricted-api={apis}:{ADMIN_HEADER}={'k' * 32}" in command
    assert f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={'k' * 32}" in command
    assert "--model-control-mode=none" in command
    assert {"model-repository", "shared-memory", "trace", "logging"} <= set(RESTRICTED_APIS)


def test_key_source_and_validation(monkeypatch):
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    first, generated = resolve_admin_key()
    second, _ = resolve_admin_key()
    assert generated and len(first) >= 32 and first != second, "an unset key must give a fresh random key per start"
    monkeypatch.setenv(ADMIN_KEY_ENV, "a-valid_key.of~length-24")
    assert resolve_admin_key() == ("a-valid_key.of~length-24", False)
    for bad in ("short", "has,comma-and-more-chars", "has=equals-and-more-chars", "has space and more chars"):
        monkeypatch.setenv(ADMIN_KEY_ENV, bad)
        with pytest.raises(ValueError, match=ADMIN_KEY_ENV):
            resolve_admin_key()
