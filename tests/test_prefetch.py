"""``pipeline.prefetch``: the long-file windows read ahead in a thread, in order, errors in place,
and the source closed when the consumer stops early."""
from __future__ import annotations

import threading

import pytest

from avtag import AvtagError
from avtag.inference.pipeline import prefetch


def test_items_in_order_first_one_in_the_calling_thread():
    threads = []

    def source():
        for i in range(20):
            threads.append(threading.current_thread())
            yield i

    assert list(prefetch(source(), 3)) == list(range(20))
    assert threads[0] is threading.main_thread()  # a decoder starts its worker in the caller's thread
    assert any(t is not threading.main_thread() for t in threads[1:])


def test_an_error_arrives_after_the_items_before_it():
    def source():
        yield from range(5)
        raise AvtagError("long.flac: decoder crashed at window 6")

    got = []
    with pytest.raises(AvtagError, match="window 6"):
        for item in prefetch(source(), 2):
            got.append(item)
    assert got == list(range(5))


def test_stopping_early_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(1000)
        finally:
            closed.set()

    for item in prefetch(source(), 2):
        if item == 3:
            break
    assert closed.wait(5.0)


def test_empty_source():
    assert list(prefetch(iter(()), 4)) == []
