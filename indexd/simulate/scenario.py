"""Scenario sizes for the synthetic shop: how many rows each table gets."""

from __future__ import annotations

from dataclasses import dataclass

from indexd.errors import UsageError

SCHEMA = "shop"


@dataclass(frozen=True)
class Scenario:
    """Row counts of the base tables; order lines (~2.5 per order) and payments (~0.8 per order) follow."""

    name: str
    customers: int
    products: int
    orders: int
    events: int

    @property
    def approx_rows(self) -> int:
        return self.customers + self.products + self.events + int(self.orders * (1 + 2.5 + 0.8))


SCENARIOS: dict[str, Scenario] = {
    "small": Scenario("small", customers=10_000, products=1_500, orders=25_000, events=40_000),
    "medium": Scenario("medium", customers=100_000, products=10_000, orders=300_000, events=500_000),
    "large": Scenario("large", customers=500_000, products=50_000, orders=1_500_000, events=2_500_000),
}


def scenario(name: str | Scenario) -> Scenario:
    if isinstance(name, Scenario):
        return name
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}") from None
