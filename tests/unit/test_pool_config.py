"""A pool's configuration types (app/pools/config.py), without I/O."""

from __future__ import annotations

import msgspec
import pytest

from app.errors import Invalid
from app.pools.config import NOT_YET, PoolConfig, PoolConfigIn, PoolPatch


def test_a_patch_can_name_every_field_of_the_configuration() -> None:
    """PATCH lists PoolConfig's fields again (as UNSET when not sent): one left out would be
    impossible to change by PATCH, and applying a patch would fail on it."""
    assert set(PoolConfig.__struct_fields__) <= set(PoolPatch.__struct_fields__)
    assert set(PoolConfigIn.__struct_fields__) == set(PoolPatch.__struct_fields__)


def test_every_field_not_enforced_yet_is_refused_by_put_and_patch() -> None:
    decode_in = msgspec.json.Decoder(PoolConfigIn)
    decode_patch = msgspec.json.Decoder(PoolPatch)
    for field in NOT_YET:
        top = field in PoolConfigIn.__struct_fields__
        body = {field: 1} if top else {"platforms": {"p": {field: 1}}}
        raw = msgspec.json.encode(body)
        with pytest.raises(Invalid, match="not supported yet"):
            decode_in.decode(raw).config()
        with pytest.raises(Invalid, match="not supported yet"):
            decode_patch.decode(raw).applied_to(PoolConfig())
