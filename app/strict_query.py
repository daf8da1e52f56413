"""Unknown query parameters are refused (422), like unknown fields in a body: a typo such as
`?stauts=running` must never be silently ignored and answered with an unfiltered list."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from .errors import Unprocessable


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared(route: APIRoute) -> frozenset[str]:
    names = route.__dict__.get("_declared_query_names")  # computed once per route
    if names is None:
        names = route.__dict__["_declared_query_names"] = frozenset(_query_names(route.dependant))
    return names


async def reject_unknown_query_parameters(request: Request) -> None:  # never blocks: no threadpool hop
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = _declared(route)
    unknown = sorted({k for k in request.query_params if k not in declared})
    if unknown:
        accepted = ", ".join(sorted(declared)) or "none"
        raise Unprocessable(["query", unknown[0][:100]], f"unknown query parameter; accepted: {accepted}", "extra_forbidden")
