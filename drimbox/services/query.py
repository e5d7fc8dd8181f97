"""Query use case (QIDO-RS and C-FIND share it): hierarchical search with a result ceiling."""

from __future__ import annotations

from dataclasses import replace

from drimbox.model import Query, SearchResult
from drimbox.ports import Index

__all__ = ["QueryService"]


class QueryService:
    """Search the index, never returning more than ``max_results`` matches per request.

    Parameters
    ----------
    index
        The index port.
    max_results
        Ceiling on the matches of one query; a larger (or absent) ``limit`` is capped and the
        result says whether more matches exist (``SearchResult.truncated``).
    """

    def __init__(self, index: Index, *, max_results: int) -> None:
        if max_results < 1:
            raise ValueError("max_results must be at least 1")
        self._index = index
        self.max_results = max_results

    def search(self, query: Query) -> SearchResult:
        """Return the matches of ``query`` (PS3.4 §C.2.2 matching), capped at ``max_results``.

        Parameters
        ----------
        query
            The query; its ``limit`` is lowered to ``max_results`` when absent or larger.

        Returns
        -------
        SearchResult
        """
        limit = self.max_results if query.limit is None else min(query.limit, self.max_results)
        return self._index.search(replace(query, limit=limit))

    def with_max_results(self, max_results: int) -> QueryService:
        """Return a service over the same index with a lower ceiling (never a higher one)."""
        return QueryService(self._index, max_results=min(max_results, self.max_results))

    def is_capped(self, query: Query, result: SearchResult) -> bool:
        """Whether ``result`` was cut by the ceiling rather than by the caller's own ``limit``."""
        return result.truncated and (query.limit is None or query.limit > self.max_results)
