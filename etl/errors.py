"""The exception tree.  Every expected failure is one of these; the CLI turns
each into a one-line ``Error: …`` and the exit code of docs/contract.md.

    EtlError                      exit 1 unless a subclass says otherwise
    ├── UsageError                exit 2: bad option, missing API key, bad input file
    ├── DatabaseError             exit 2: cannot connect before the run starts
    │   ├── SchemaBehindError     exit 2: server database needs `etl db upgrade`
    │   └── SchemaAheadError      exit 2: the database is at a revision this code does not know
    └── AuthError                 exit 3: the API refused the key (401/403)

A database lost in the middle of a run ends that run with exit 1 (see
:mod:`etl.sync`): the run started, so it is no configuration error.

Per-item API problems are not exceptions past the API client: they become
:class:`etl.results.ApiResult` values and queue states.
"""

from __future__ import annotations


class EtlError(Exception):
    exit_code = 1


class UsageError(EtlError):
    exit_code = 2


class DatabaseError(EtlError):
    exit_code = 2


class SchemaBehindError(DatabaseError):
    pass


class SchemaAheadError(DatabaseError):
    pass


class AuthError(EtlError):
    exit_code = 3

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
