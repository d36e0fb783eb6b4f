"""Helpers the tests share that are not fixtures (fixtures live in tests/conftest.py).

``tests.support.db``: throwaway databases per backend, one in-process sync run,
reading the queue back.  ``tests.support.proc``: the real ``etl`` command in a
subprocess and the stored rows of a call compared with what the API sent.
Tests import from here, never from ``tests.conftest``.
"""
