"""Each pooled connection's max lifetime: pool.recycle spread by ± jitter, checked against an injected clock."""

from __future__ import annotations

import pytest

from indexd.db.lifetime import DEADLINE, ConnectionExpired, Lifetime


@pytest.mark.parametrize(("rand", "life"), [(0.0, 90.0), (0.5, 100.0), (1.0, 110.0)])
def test_the_lifetime_spans_recycle_plus_or_minus_jitter(rand: float, life: float) -> None:
    assert Lifetime(100.0, 0.1, rand=lambda: rand).draw() == pytest.approx(life)


def test_no_recycle_means_no_deadline() -> None:
    info: dict[str, object] = {}
    Lifetime(0.0, 0.1).stamp(info)
    assert info == {}
    Lifetime(0.0, 0.1).check(info, "database main")  # never expires


def test_a_connection_expires_at_its_own_deadline() -> None:
    now = [50.0]
    lifetime = Lifetime(100.0, 0.2, clock=lambda: now[0], rand=lambda: 0.25)  # 100 x (1 - 0.1) = 90 s
    info: dict[str, object] = {}
    lifetime.stamp(info)
    assert info[DEADLINE] == pytest.approx(140.0)
    now[0] = 139.9
    lifetime.check(info, "database main")
    now[0] = 140.0
    with pytest.raises(ConnectionExpired, match="database main: pooled connection reached its max lifetime"):
        lifetime.check(info, "database main")
