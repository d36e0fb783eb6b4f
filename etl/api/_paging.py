"""One paginator per cursor style: v1's ``pageToken``/``nextPageToken`` and the dated ``after``/``nextCursor``.

Every list the job reads — discovery's lines, conversations and calls, the
dated calls listing, a call's transcript pages, webhooks, users, lines and
contacts — walks its pages through one of these.  The surface's adapter
builds each page's request and reads its answer into a
:class:`etl.results.Page` (items and the next token); the paginator sends the
token back and knows when to stop: the last page, a failed request, a token
the API sends twice (a loop), too many empty pages in a row, or a page limit.
A page that lists nothing not listed before on this walk (fresh tokens over the
same items) counts as empty (issue 25): the walk ends with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from etl.results import ApiResult, Page
from etl.storable import Malformed

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
        listed: set[str] = set()  # every item any page of this walk listed (malformed ones too)
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
            # A page of items already listed (fresh tokens over the same items) brings nothing: empty.
            page_ids = set(item_ids(page.items))
            empty = empty + 1 if not page_ids - listed else 0
            listed |= page_ids
            if next_token is not None and empty > self.max_empty:
                problem = (f"listing {self.what}: {empty} pages in a row with a next {self.noun} brought nothing "
                           "not listed before; stopped")
            yield result, next_token is None
            if problem is not None:
                raise PagingError(problem, None, token, pages)
            if next_token is None:
                return
            seen.add(next_token)
            token = next_token


def item_ids(items: Iterable[Any]) -> Iterator[str]:
    """What tells each listed item apart, for telling a page that brings nothing new: its id (a call's,
    a summary's call's, a line's …), a malformed item's id as sent, else the item itself."""
    for item in items:
        if isinstance(item, Malformed):
            yield "malformed:" + repr(item.raw.get("id") if isinstance(item.raw, dict) else item.raw)[:200]
            continue
        key = getattr(item, "id", None) or getattr(item, "call_id", None) or getattr(item, "segment_id", None)
        yield str(key) if key is not None else repr(item)[:200]


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
