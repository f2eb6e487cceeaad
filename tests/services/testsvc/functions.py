import os
import sys
import time


def add(a, b=0):
    return a + b


def echo(z=0, **data):
    return {"z": z, "data": data}


def nothing():
    return None


def raises(message="bad input"):
    raise ValueError(message)


def notjson():
    return {"values": [1, range(2)]}


def printer(text="hello"):
    print("printed to stdout:", text)
    print("printed to stderr:", text, file=sys.stderr)
    return text


def shout(size=1 << 20):
    sys.stdout.write("x" * size)  # one huge line, no newline: the node must keep draining it
    sys.stdout.flush()
    return size


def tuplekeys():
    return {(1, 2): 3}


def crash(exit_code=None):
    if exit_code is not None:
        os._exit(exit_code)
    return os.getpid()


def pid(delay=0.0, tag=None, started=None):
    if started:  # tells the test this request holds the pipeline now
        open(started, "w").close()
    time.sleep(delay)
    return {"pid": os.getpid(), "tag": tag, "at": time.time()}
