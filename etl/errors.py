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

from collections.abc import Callable


class EtlError(Exception):
    exit_code = 1


class UsageError(EtlError):
    """A bad setting or input.  ``params``: the parameters the message names, as ``{name}`` fields of
    ``message``; the library shows the parameter's name (``rate``), the CLI its flag (``--rate``)."""

    exit_code = 2

    def __init__(self, message: str, *, params: tuple[str, ...] = ()) -> None:
        self.template = message
        self.params = params
        super().__init__(self.worded(lambda name: name))

    def worded(self, word: Callable[[str], str]) -> str:
        """The message with each parameter named by ``word`` (the CLI passes the flag of each)."""
        if not self.params:
            return self.template
        return self.template.format_map({name: word(name) for name in self.params})


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
