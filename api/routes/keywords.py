"""GET /keywords (tracked and seen keywords with counts), POST /keywords (start tracking one)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import READ, WRITE, DatabaseDep
from api.params import BadParameter, clean_term
from api.routes.common import READ_RESPONSES, WRITE_RESPONSES, call_db
from api.schemas import KeywordCreate, KeywordPublic, KeywordsPublic

router = APIRouter(tags=["keywords"])


@router.get(
    "/keywords",
    response_model=KeywordsPublic,
    dependencies=[READ],
    responses=READ_RESPONSES,
    summary="Tracked keywords and keywords seen in stored tweets",
)
async def list_keywords(db: DatabaseDep) -> KeywordsPublic:
    from db import queries

    infos = await call_db(queries.keywords, db)
    data = [KeywordPublic.model_validate(i) for i in infos]
    return KeywordsPublic(data=data, count=len(data))


@router.post(
    "/keywords",
    response_model=KeywordPublic,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WRITE],
    responses=WRITE_RESPONSES,
    summary="Start tracking a keyword",
)
async def add_keyword(body: KeywordCreate, db: DatabaseDep) -> KeywordPublic:
    """Idempotent: a keyword already tracked (case-insensitively) is answered as it is stored.
    Producers pick new keywords up on their next round."""
    from db import queries, writes

    term = clean_term(body.keyword, param="keyword")
    if term is None:
        raise BadParameter("keyword", "is empty")
    await call_db(writes.add_keyword, db, term)
    infos = await call_db(queries.keywords, db)
    for info in infos:
        if info.keyword.lower() == term.lower():
            return KeywordPublic.model_validate(info)
    return KeywordPublic(keyword=term, tracked=True, n=0, last_seen=None)
