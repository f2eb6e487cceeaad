"""What data science code returns, one kind per call (tests/test_results.py)."""

import dataclasses
import datetime
import decimal
import enum
import uuid

import numpy as np
import pandas as pd
import pydantic


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Customer(pydantic.BaseModel):
    name: str
    tags: list[str]


class Opaque:
    pass


VALUES = {
    "numpy_int": lambda: np.int64(3),
    "numpy_float": lambda: np.float32(0.5),
    "numpy_bool": lambda: np.bool_(True),
    "numpy_array": lambda: np.array([[1, 2], [3, 4]]),
    "series": lambda: pd.Series({"a": 1.0, "b": float("nan")}),
    "dataframe": lambda: pd.DataFrame(
        {"x": [1, 2], "y": [0.5, None], "t": [pd.Timestamp("2024-01-02T03:04:05"), pd.NaT]}
    ),
    "timestamp": lambda: pd.Timestamp("2024-01-02T03:04:05", tz="UTC"),
    "datetime": lambda: datetime.datetime(2024, 1, 2, 3, 4, 5),
    "date": lambda: datetime.date(2024, 1, 2),
    "time": lambda: datetime.time(3, 4, 5),
    "decimal": lambda: decimal.Decimal("1.25"),
    "uuid": lambda: uuid.UUID(int=1),
    "set": lambda: {3, 1, 2},
    "dataclass": lambda: Point(1.5, 2.0),
    "pydantic": lambda: Customer(name="ada", tags=["x"]),
    "enum": lambda: Color.RED,
    "nested": lambda: {"prediction": np.array([0.25])[0], "when": datetime.date(2024, 1, 2), "ids": {uuid.UUID(int=2)}},
    "opaque": lambda: {"a": [1, Opaque()]},
}


def give(kind: str):
    """Return one value of the kind asked for."""
    return VALUES[kind]()
