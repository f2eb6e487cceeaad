"""Functions with type hints, for validation and the OpenAPI document (tests/test_openapi.py)."""

import dataclasses
import enum
from typing import Literal, Optional, TypedDict, Union

import pydantic


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Address(TypedDict):
    city: str
    zip: int


@dataclasses.dataclass
class Box:
    width: float
    height: float = 1.0


class Order(pydantic.BaseModel):
    item: str
    quantity: int


def score(age: int, price: float, name: str, active: bool, plan: Plan = Plan.FREE) -> float:
    """Score a customer.

    A longer description of the score.
    """
    return age * price if active else 0.0


def shapes(
    boxes: list[Box],
    address: Address,
    tags: dict[str, int],
    unit: Literal["cm", "in"] = "cm",
    note: Optional[str] = None,
    weight: Union[int, str] = 0,
) -> dict[str, float]:
    return {"area": sum(box.width * box.height for box in boxes)}


def order(order: Order, **extra) -> Order:
    return order


def anything(data, count: int = 1):
    return {"data": data, "count": count}


def fails(x: int) -> int:
    raise ValueError("the function's own error")
