"""GET /tweets/latest: newest tweets first, filtered, with a keyset cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import READ, DatabaseDep
from api.params import BadParameter, clean_term, clean_terms
from api.routes.common import READ_RESPONSES, call_db, json_response
from api.schemas import Label, TweetsPublic

router = APIRouter(tags=["tweets"], dependencies=[READ], responses=READ_RESPONSES)


@router.get("/tweets/latest", response_model=TweetsPublic, summary="Latest stored tweets")
async def latest_tweets(
    db: DatabaseDep,
    keyword: Annotated[
        list[str] | None,
        Query(
            description="Only these keywords (repeat the parameter, or comma-separate).", examples=["United"]
        ),
    ] = None,
    label: Annotated[Label | None, Query(description="Only this sentiment label.")] = None,
    q: Annotated[str | None, Query(description="Text contains (case-insensitive).", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size, 1..500.")] = 50,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page.", max_length=500)
    ] = None,
) -> Any:
    from db import queries

    keywords = clean_terms(keyword, param="keyword")
    text = clean_term(q, param="q")
    try:
        page = await call_db(
            queries.latest_tweets,
            db,
            keywords=keywords,
            label=label,
            q=text,
            limit=limit,
            cursor=cursor or None,
        )
    except ValueError as exc:  # the query layer's verdict on a malformed or foreign cursor
        raise BadParameter("cursor", str(exc) or "not a cursor this API issued") from None
    return json_response({"data": page.data, "count": len(page.data), "next_cursor": page.next_cursor})
