"""Initialization code: runs once per pipeline, when the pipeline loads.

Each initialization appends the pipeline's pid to the file the test names in the environment.
"""

import os

with open(os.environ["APINODE_TEST_INIT_LOG"], "a") as log:
    log.write(f"{os.getpid()}\n")

calls = 0


def state():
    global calls
    calls += 1
    return {"pid": os.getpid(), "calls": calls}
