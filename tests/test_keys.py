"""Admin keys: stored as digests, checked in constant time, shared with the command line."""

from __future__ import annotations

import pytest

from apinode.node.errors import BadRequest, NotFound
from apinode.node.keys import AdminKeys


def test_keys_are_stored_as_digests_and_checked(tmp_path):
    keys = AdminKeys(tmp_path / "admin-keys.json")
    made = keys.create(label="ops")
    assert made["key"] not in (tmp_path / "admin-keys.json").read_text()
    assert (tmp_path / "admin-keys.json").stat().st_mode & 0o077 == 0
    assert keys.check(made["key"])
    assert not keys.check(made["key"][:-1]) and not keys.check("") and not keys.check(None)
    assert keys.entries() == [{field: made[field] for field in made if field != "key"}]


def test_a_key_made_elsewhere_works_at_once(tmp_path):
    node, command_line = AdminKeys(tmp_path / "k.json"), AdminKeys(tmp_path / "k.json")
    assert not node.check("anything")
    made = command_line.create()
    assert node.check(made["key"])
    command_line.delete(made["id"])
    assert not node.check(made["key"])


def test_delete_by_key_or_id(tmp_path):
    keys = AdminKeys(tmp_path / "k.json")
    first, second = keys.create(), keys.create()
    assert keys.delete(first["key"])["id"] == first["id"]
    assert keys.delete(second["id"])["id"] == second["id"]
    with pytest.raises(NotFound, match="no such admin key"):
        keys.delete(first["key"])


def test_expiry(tmp_path):
    keys = AdminKeys(tmp_path / "k.json")
    assert not keys.check(keys.create(expiry="2000-01-01T00:00:00Z")["key"])
    assert keys.check(keys.create(expiry="2999-01-01T00:00:00")["key"])
    with pytest.raises(BadRequest, match="ISO 8601"):
        keys.create(expiry="soon")
