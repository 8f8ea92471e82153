"""Personalize in the loop: one call from a template gets a user's recommendations with content.

`GET /v1/recommenders/{recommender}/users/{user_id}/content?locale=&context.K=v&filter.K=v` asks
Amazon Personalize for the user's items (service/adapters/user_recommendations.py: cached per
user, one call per key at a time) and answers exactly as the content route does for those IDs, in
Personalize's order, each item with its `score`, plus `recommendation_id`.

When Personalize cannot answer in its share of the budget (slow, throttling, failing, unreachable,
refusing the credentials), the recommender's `personalize.fallback_ids` are served instead, with
`X-Degraded: personalize-unavailable` (counted in enricher_degraded_responses_total); without
fallback IDs the answer is `send: false`.
"""

from __future__ import annotations

from aiohttp import web

from service.adapters.content import ContentQuery, query_locale
from service.adapters.personalize_runtime import PersonalizeUnavailable
from service.adapters.user_recommendations import user_query
from service.errors import NotFound
from service.web.access import requires
from service.web.app_keys import DEADLINE, METRICS, USER_RECOMMENDATIONS
from service.web.handlers.content import content_response, recommender_of

PERSONALIZE_UNAVAILABLE = "personalize-unavailable"


@requires("transform", default_deadline="content_deadline_ms")
async def get_user_content(request: web.Request) -> web.Response:
    query = request.query
    wanted_user = user_query(request.match_info["user_id"], list(query.items()))
    locale = query_locale(query.get("locale"))
    recommender = await recommender_of(request)
    spec = recommender.spec.personalize
    if spec is None:
        raise NotFound(f"recommender {recommender.name!r} has no personalize block to ask for a "
                       "user's items", field="recommender")
    try:
        found = await request.app[USER_RECOMMENDATIONS].get(
            recommender.id, spec, wanted_user, request[DEADLINE])
    except PersonalizeUnavailable:
        request.app[METRICS].degraded.labels("get_user_content", PERSONALIZE_UNAVAILABLE).inc()
        fallback = list(spec.fallback_ids)
        return await content_response(
            request, recommender, ContentQuery(fallback, locale),
            extras=[{"score": None}] * len(fallback), fields={"recommendation_id": None},
            degraded=PERSONALIZE_UNAVAILABLE,
        )
    return await content_response(
        request, recommender, ContentQuery(list(found.ids), locale),
        extras=[{"score": score} for score in found.scores],
        fields={"recommendation_id": found.recommendation_id},
    )
