"""Endpoints for the HTTP front's tests: echo the request, take a while, raise."""

import pathlib
import time


def echo(**data):
    return data


def slow(delay=0.0, started=None):
    if started:
        pathlib.Path(started).touch()
    time.sleep(delay)
    return delay


def raises(message="bad input"):
    raise ValueError(message)
