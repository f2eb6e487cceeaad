"""apinode.packaging.filelock: one holder at a time, and a lock file deleted by its holder."""

from __future__ import annotations

import threading

from apinode.packaging.filelock import locked


def test_a_held_lock_is_refused_without_waiting_then_free_again(tmp_path):
    path = tmp_path / "x.lock"
    with locked(path) as held:
        assert held
        with locked(path, wait=False) as second:
            assert not second
    with locked(path, wait=False) as again:
        assert again


def test_a_waiter_on_a_file_its_holder_deleted_locks_the_new_one(tmp_path):
    path = tmp_path / "x.lock"
    got = threading.Event()

    def wait_for_it():
        with locked(path):
            got.set()
            assert path.exists()  # the file it holds is the one at the path

    with locked(path):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert not got.wait(0.2)  # it waits while we hold the lock
        path.unlink()
    waiter.join(10)
    assert got.is_set()
