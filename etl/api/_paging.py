"""One paginator per cursor style: v1's ``pageToken``/``nextPageToken`` and the dated ``after``/``nextCursor``.

Every list the job reads — discovery's lines, conversations and calls, the
dated calls listing, a call's transcript pages, webhooks, users, lines and
contacts — walks its pages through one of these.  The surface's adapter
builds each page's request and reads its answer into a
:class:`etl.results.Page` (items and the next token); the paginator sends the
token back and knows when to stop: the last page, a failed request, a token
the API sends twice (a loop), too many empty pages in a row, or a page limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from etl.results import ApiResult, Page

T = TypeVar("T")

# Fetches one page; its argument holds the next page's token under the style's parameter ({} for the first).
FetchPage = Callable[[dict[str, Any]], ApiResult[Page[T]]]


class PagingError(Exception):
    """A listing cannot go on.  ``result``: the failed answer (None for a loop, empty pages or too many
    pages); ``token``: the token or cursor that page was asked with (None: the first page)."""

    def __init__(self, message: str, result: ApiResult[Any] | None, token: str | None, pages: int) -> None:
        super().__init__(message)
        self.message = message
        self.result = result
        self.token = token
        self.pages = pages  # pages read before this error


class _Pages(Generic[T]):
    """Iterates ``(result, is_last)`` over every page; raises :class:`PagingError` when the listing cannot go on
    (a problem seen on a page is raised after that page was yielded).  :class:`etl.ratelimit.NotSent` from
    ``fetch`` passes through."""

    param: ClassVar[str]
    noun: ClassVar[str]

    def __init__(self, fetch: FetchPage[T], what: str, *, max_empty: int = 20, max_pages: int | None = None) -> None:
        self.fetch = fetch
        self.what = what
        self.max_empty = max_empty
        self.max_pages = max_pages

    def __iter__(self) -> Iterator[tuple[ApiResult[Page[T]], bool]]:
        token: str | None = None
        seen: set[str] = set()
        empty = pages = 0
        while True:
            if self.max_pages is not None and pages >= self.max_pages:
                raise PagingError(f"more than {self.max_pages} pages of {self.what}", None, token, pages)
            result = self.fetch({self.param: token} if token else {})
            if result.kind != "ok" or result.data is None:
                raise PagingError(f"listing {self.what} failed: {result.error or result.kind}", result, token, pages)
            pages += 1
            page = result.data
            next_token = page.next or None
            problem = None
            if next_token is not None and next_token in seen:
                problem = f"listing {self.what}: the API sent {self.noun} {next_token[:40]!r} twice; stopped"
            empty = empty + 1 if not page.items else 0
            if next_token is not None and empty > self.max_empty:
                problem = f"listing {self.what}: {empty} empty pages in a row with a next {self.noun}; stopped"
            yield result, next_token is None
            if problem is not None:
                raise PagingError(problem, None, token, pages)
            if next_token is None:
                return
            seen.add(next_token)
            token = next_token


class TokenPages(_Pages[T]):
    """v1 lists: ``pageToken`` asks for the page that the previous one's ``nextPageToken`` named."""

    param = "pageToken"
    noun = "page token"


class CursorPages(_Pages[T]):
    """Dated lists: ``after`` asks for the page that the previous one's ``nextCursor`` named (short-lived:
    never stored; an expired one answers 400)."""

    param = "after"
    noun = "cursor"


Paginator = TokenPages[T] | CursorPages[T]
