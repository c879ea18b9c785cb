"""Capacity arithmetic (app/pools/capacity.py), shared by the submission check, the
scheduler, "why is it waiting" and the pools page; no I/O."""

from __future__ import annotations

from app.pools.capacity import Amount, BackendRoom, Need, read_capacity, room_of

GIB = 2**30


def test_amounts_add_subtract_and_say_what_is_short() -> None:
    a = Amount(1.5, 2 * GIB, 1) + Amount(0.5, GIB, 0)
    assert a == Amount(2.0, 3 * GIB, 1)
    assert a - Amount(2.0, GIB, 1) == Amount(0.0, 2 * GIB, 0)
    assert Amount(2, 4 * GIB, 2).short_of(Amount(4, 2 * GIB, 1)) == ["memory", "gpu"]
    assert Amount(0.1 + 0.2, 0, 0).fits(Amount(0.3, 0, 0)), "fractions of a CPU must add up"


def test_nodes_sum_per_platform() -> None:
    nodes = [
        {"name": "a", "platform": "dgx", "cpu": 8, "memory": 64 * GIB, "gpu": 8},
        {"name": "b", "platform": "dgx", "cpu": 8, "memory": 64 * GIB, "gpu": 8},
        {"name": "c", "cpu": 4, "memory": 8 * GIB},
    ]
    assert room_of(nodes) == {
        "dgx": Amount(16, 128 * GIB, 16),
        None: Amount(4, 8 * GIB, 0),
    }


def test_a_group_fits_a_backend_only_whole_and_reserving_counts_it_used() -> None:
    room = room_of([{"platform": None, "cpu": 4, "memory": 8 * GIB, "gpu": 1}])
    b = BackendRoom("b", 1, slots=3, total_slots=3, free=dict(room), total=room)
    group = [Need(None, Amount(2, GIB, 1), 2)]
    assert b.fits(group)
    b.reserve(group)
    assert b.slots == 1 and b.free[None] == Amount(2, 7 * GIB, 0)
    assert not b.fits(group), "the GPU and the slots are taken"
    assert b.fits(group, free=False), "but the backend could hold it when idle"
    assert b.total[None] == Amount(4, 8 * GIB, 1), "reserving changes only what is free"
    assert not b.fits([Need("other", Amount(1, 0, 0), 1)], free=False), "no such platform"


def test_stored_capacity_keeps_only_plausible_nodes() -> None:
    stored = (
        b'{"nodes": [{"name": "ok", "cpu": 2, "memory": 1024}, {"name": "bad", "cpu": -1},'
        b' "junk"], "slots": 7}'
    )
    capacity = read_capacity(stored)
    assert [n["name"] for n in capacity["nodes"]] == ["ok"] and capacity["slots"] == 7
    assert read_capacity(b"not json") == {"nodes": [], "slots": 0}
