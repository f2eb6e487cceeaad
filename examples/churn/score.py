"""The churn example's endpoint: a logistic model read once, at initialization, from its folder."""

import json
import math
import os

with open(os.path.join(folders[0], "churn_model.json")) as model_file:  # noqa: F821 (set by apinode)
    MODEL = json.load(model_file)


def score(age, days, price):
    """Probability that the customer churns."""
    features = {"age": age, "days": days, "price": price}
    z = MODEL["intercept"] + sum(MODEL["coefficients"][name] * value for name, value in features.items())
    return round(1 / (1 + math.exp(-z)), 4)
