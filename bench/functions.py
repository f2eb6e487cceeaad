"""The benchmarks' functions: every server of bench_front.py serves `identity` and `predict`, the same code in each.

`identity` measures the servers themselves; `predict` adds a small scikit-learn model (trained
here at import, on synthetic data, as an endpoint's initialization would load one); `pause`
(bench_wakeups.py) keeps the node waiting for its pipeline for the given seconds, without
using a core meanwhile.
"""

import time


def identity(**data):
    return data


def pause(seconds, **data):
    time.sleep(seconds)
    return data


def _train():
    try:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # the identity function alone needs neither (bench_node.py, bare_app.py)
        return None
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 3)) * [10, 100, 200] + [40, 300, 500]
    labels = (features @ [0.05, -0.004, 0.003] + rng.normal(size=2000) > 1.5).astype(int)
    return LogisticRegression(max_iter=1000).fit(features, labels)


_model = _train()


def predict(age, days, price):
    return float(_model.predict_proba([[age, days, price]])[0, 1])
