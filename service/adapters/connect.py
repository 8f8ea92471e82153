"""Amazon Connect outbound campaigns: a journey's custom action block, answered per profile.

Connect invokes a Lambda function with a batch of customer profiles and wants one result per
profile (the Amazon Connect administrator guide, "Invoke Lambda functions"):

    in:  {"InvocationMetadata": {"CampaignContext": {"CampaignId", "RunId", "ActionId",
          "CampaignName"}}, "Items": {"CustomerProfiles": [{"ProfileId", "CustomerData" (the
          profile as a JSON string), "IdempotencyToken"}, ...]}}
    out: {"Items": {"CustomerProfiles": [{"Id": ProfileId, "ResultData": {...}}, ...]}}

An exception, or a profile left unanswered, fails the whole batch, so every profile is answered,
in order, exactly once, and a profile that cannot be served gets `{"send": false, "reason":
"..."}`. Only an event that is not this shape at all (no `Items.CustomerProfiles` array, a
profile without a `ProfileId`) is refused as a whole, a 400/422 naming the field.

A profile's `ResultData` is what the content route (service/adapters/content.py) answers for its
IDs and locale, made by the same `answer_bytes`, with the rows of one resolver call for the whole
batch. Its IDs come from the recommender's `connect` block: `ids_from`, a dotted path into the
parsed CustomerData (a JSON array of IDs, or a string of comma-separated IDs as Customer Profiles
stores attributes), else Amazon Personalize for the user at `user_id_from` (default `ProfileId`:
the event's, when CustomerData holds none), through the user route's cache, single flight, budget
and fallback (service/adapters/user_recommendations.py), its answer then the user route's (items
with `score`, plus `recommendation_id`). `locale_from` names the profile's locale (absent or
empty: the recommender's).

Connect refuses a `ResultData` over 32 KB (the whole invocation, per the guide). How it measures
is not said, so an answer is held to RESULT_DATA_LIMIT bytes as the Lambda runtime's `json.dumps`
may write it, the largest of the usual writings (`\\u` escapes for every non-ASCII character, a
space after each `,` and `:`), which is under 32 KB however a KB is counted. An answer over it is
the answer for fewer IDs, trailing ones dropped (never a value cut), with `truncated: true`.

A profile's answer is kept for its IdempotencyToken (service/adapters/connect_replay.py) and
replayed to a retry.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from service import json_codec
from service.adapters import content
from service.adapters.connect_replay import ConnectReplay, ReplayKey, replay_key
from service.adapters.content import ContentQuery, query_locale
from service.adapters.personalize_runtime import PersonalizeUnavailable, Recommended
from service.adapters.user_recommendations import UserQuery, UserRecommendations, user_query
from service.enrichment.recommender_lookup import Recommender
from service.enrichment.recommenders import DEFAULT_USER_ID_FROM, ConnectSpec
from service.errors import FieldError, ValidationFailed
from service.items import all_item_ids_valid, item_id_problem, json_type
from service.resolution.deadline import Deadline
from service.resolution.resolver import ItemResolver

RESULT_DATA_LIMIT = 32_000
MAX_PROFILES = 1000  # per event (the guide gives no batch size; 100 is what is expected)
MAX_EVENT_PROBLEMS = 20  # field errors listed in one 422
MAX_CAMPAIGN_TEXT = 200
PERSONALIZE_UNAVAILABLE = "personalize-unavailable"
NOTHING_SHOWN = "none of the profile's item IDs can be shown (unknown or unavailable items)"
_MISSING = object()


@dataclass(frozen=True)
class Profile:
    profile_id: str
    customer_data: object  # as sent: the profile as a JSON string (None when absent)
    token: str | None


@dataclass(frozen=True)
class ConnectEvent:
    profiles: list[Profile]
    campaign: dict[str, str]  # CampaignContext's strings (CampaignId, RunId, ...), for the log


def parse_event(body: object) -> ConnectEvent:
    """The profiles of a Connect event; a 422 naming the fields when it is not one."""
    if not isinstance(body, dict):
        raise ValidationFailed.of("body", "must be a JSON object: Amazon Connect's event "
                                  '{"Items": {"CustomerProfiles": [...]}}, got ' + json_type(body))
    items = body.get("Items")
    if not isinstance(items, dict):
        raise ValidationFailed.of("Items", 'is required: an object like {"CustomerProfiles": '
                                  '[{"ProfileId": "...", "CustomerData": "{...}"}]}')
    entries = items.get("CustomerProfiles")
    if not isinstance(entries, list):
        raise ValidationFailed.of("Items.CustomerProfiles", "is required: an array of customer "
                                  "profiles" if entries is None
                                  else f"must be an array, got {json_type(entries)}")
    if len(entries) > MAX_PROFILES:
        raise ValidationFailed.of("Items.CustomerProfiles",
                                  f"at most {MAX_PROFILES} profiles per event, got {len(entries)}")
    profiles: list[Profile] = []
    errors: list[FieldError] = []
    for index, entry in enumerate(entries):
        where = f"Items.CustomerProfiles[{index}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(where, f"must be an object, got {json_type(entry)}"))
            continue
        profile_id = entry.get("ProfileId")
        if not isinstance(profile_id, str) or not profile_id:
            errors.append(FieldError(f"{where}.ProfileId", "is required: the profile's ID, a "
                                     "non-empty string (its answer's Id)"))
            continue
        token = entry.get("IdempotencyToken")
        profiles.append(Profile(profile_id, entry.get("CustomerData"),
                                token if isinstance(token, str) and token else None))
    if errors:
        raise ValidationFailed.of_many(errors[:MAX_EVENT_PROBLEMS])
    return ConnectEvent(profiles, _campaign(body.get("InvocationMetadata")))


def _campaign(metadata: object) -> dict[str, str]:
    context = metadata.get("CampaignContext") if isinstance(metadata, dict) else None
    if not isinstance(context, dict):
        return {}
    return {key: value[:MAX_CAMPAIGN_TEXT] for key in ("CampaignId", "RunId", "ActionId")
            if isinstance(value := context.get(key), str)}


# -- one profile: where its items come from ---------------------------------------------------


@dataclass(slots=True)
class Wanted:
    """What one profile asks for, or why it cannot be served (`reason`)."""

    ids: list[str] = field(default_factory=list)
    locale: str | None = None
    user: UserQuery | None = None  # asked of Personalize (then `ids` come from its answer)
    extras: list[dict[str, Any]] | None = None
    fields: dict[str, Any] | None = None
    reason: str | None = None
    degraded: str | None = None  # the IDs are Personalize's fallback


class ProfileReader:
    """Reads profiles as one recommender's `connect` block says.

    A profile is a few hundred bytes of which the block names two or three values: those are
    read with a decoder made for the block's paths (msgspec, passing over every other field
    without building it, in half the time of a whole parse), each value then parsed alone. A
    profile that does not fit that shape (not JSON, not an object where the path goes on) is
    parsed whole, which says what is wrong with it."""

    def __init__(self, spec: ConnectSpec, has_personalize: bool, max_ids: int) -> None:
        self.spec = spec
        self.has_personalize = has_personalize
        self.max_ids = max_ids
        self._paths = {name: tuple(path.split(".")) for name, path in (
            ("ids", spec.ids_from), ("user", spec.user_id_from), ("locale", spec.locale_from))
            if path is not None}
        self._decoder, self._accessors = _partial_decoder(self._paths)

    def wanted(self, profile: Profile) -> Wanted:
        found = self._read(profile.customer_data)
        if isinstance(found, str):
            return Wanted(reason=found)
        locale = None
        if "locale" in found:
            value = found["locale"]
            if isinstance(value, str) and value:
                try:
                    locale = query_locale(value)
                except ValidationFailed:
                    return Wanted(reason=f"the value at {self.spec.locale_from} is not a locale "
                                  "tag like en_US, de or es-MX")
            elif value is not _MISSING and value is not None and value != "":
                return Wanted(reason=f"the value at {self.spec.locale_from} must be a string, "
                              f"got {json_type(value)}")
        if "ids" in found:
            ids = _ids(found["ids"], self.spec.ids_from, self.max_ids)  # type: ignore[arg-type]
            if isinstance(ids, str):
                return Wanted(reason=ids)
            return Wanted(ids=ids, locale=locale)
        if not self.has_personalize:
            return Wanted(reason="the recommender says neither where a profile's item IDs are "
                          "(connect.ids_from) nor which Personalize campaign to ask (personalize)")
        user_id = found["user"]
        if user_id is _MISSING and self.spec.user_id_from == DEFAULT_USER_ID_FROM:
            user_id = profile.profile_id  # CustomerData need not repeat the event's ProfileId
        if not isinstance(user_id, str):
            return Wanted(reason=f"no user ID at {self.spec.user_id_from} in CustomerData"
                          if user_id is _MISSING or user_id is None else
                          f"the user ID at {self.spec.user_id_from} must be a string, got "
                          f"{json_type(user_id)}")
        try:
            user = user_query(user_id, [])
        except ValidationFailed as exc:
            return Wanted(reason=f"the user ID at {self.spec.user_id_from} "
                          f"{exc.errors[0].reason}")
        return Wanted(user=user, locale=locale)

    def _read(self, raw: object) -> dict[str, Any] | str:
        """The value at each path (_MISSING where there is none), or why there are none."""
        if self._decoder is not None and isinstance(raw, str):
            try:
                root = self._decoder.decode(raw)
                found = {}
                for name, attributes in self._accessors.items():
                    node: Any = root
                    for attribute in attributes:
                        node = getattr(node, attribute)
                        if node is msgspec.UNSET:
                            break
                    found[name] = (_MISSING if node is msgspec.UNSET
                                   else orjson.loads(memoryview(node)))
                return found
            except (msgspec.DecodeError, msgspec.ValidationError, orjson.JSONDecodeError,
                    RecursionError):
                pass  # not this shape: the whole parse says what it is
        data = _customer_data(raw)
        if isinstance(data, str):
            return data
        return {name: _at(data, path) for name, path in self._paths.items()}


_LEAF = object()


def _partial_decoder(paths: Mapping[str, tuple[str, ...]]
                     ) -> tuple[msgspec.json.Decoder | None, dict[str, tuple[str, ...]]]:
    """A decoder of just the objects along `paths`, each path's value kept as raw JSON, and the
    attribute names that lead to each; (None, {}) when one path ends where another goes on."""
    tree: dict[str, Any] = {}
    for path in paths.values():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if node is _LEAF:
                return None, {}
        if isinstance(node.get(path[-1]), dict):
            return None, {}
        node[path[-1]] = _LEAF
    names: dict[int, dict[str, str]] = {}

    def struct(branch: dict[str, Any]) -> type:
        fields = []
        for index, (key, child) in enumerate(branch.items()):
            kind = msgspec.Raw if child is _LEAF else struct(child)
            fields.append((f"f{index}", kind, msgspec.field(name=key, default=msgspec.UNSET)))
        names[id(branch)] = {key: f"f{index}" for index, key in enumerate(branch)}
        return msgspec.defstruct("ProfilePart", fields)

    decoder = msgspec.json.Decoder(struct(tree))
    accessors = {}
    for name, path in paths.items():
        node, attributes = tree, []
        for key in path:
            attributes.append(names[id(node)][key])
            node = node[key]
        accessors[name] = tuple(attributes)
    return decoder, accessors


def _customer_data(raw: object) -> dict[str, Any] | str:
    """The parsed profile, or why there is none. An object is taken as it is (the guide says a
    JSON string; an object is what the string would hold)."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return ("CustomerData is missing" if raw is None
                else f"CustomerData must be the profile as a JSON string, got {json_type(raw)}")
    try:
        data = orjson.loads(raw)  # most profiles: nothing is written back, depth is no matter
    except orjson.JSONDecodeError:
        try:  # valid JSON orjson cannot hold (1e400); else the reason
            data = json_codec.loads(raw)
        except (ValueError, RecursionError) as exc:
            return f"CustomerData is not valid JSON ({str(exc)[:120]})"
    if not isinstance(data, dict):
        return f"CustomerData must hold a JSON object (the profile), got {json_type(data)}"
    return data


def _at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _ids(value: object, path: str, max_ids: int) -> list[str] | str:
    """The item IDs at `path`: a JSON array of strings, or one string of comma-separated IDs
    (each stripped of surrounding spaces, empty ones dropped); else why not."""
    if value is _MISSING or value is None:
        return f"no item IDs at {path} in CustomerData"
    if isinstance(value, str):
        ids: list[Any] = [piece for part in value.split(",") if (piece := part.strip())]
    elif isinstance(value, list):
        ids = value
    else:
        return (f"the item IDs at {path} must be an array of strings or a comma-separated "
                f"string, got {json_type(value)}")
    if not ids:
        return f"no item IDs at {path} in CustomerData (it is empty)"
    if len(ids) > max_ids:
        return f"at most {max_ids} item IDs per profile, got {len(ids)} at {path}"
    if not all_item_ids_valid(ids):
        index, problem = next((i, p) for i, item_id in enumerate(ids)
                              if (p := item_id_problem(item_id)))
        return f"the item ID at {path}[{index}] {problem}"
    return ids


# -- the batch ---------------------------------------------------------------------------------


@dataclass
class ConnectAnswer:
    body: bytes
    degraded: list[str] = field(default_factory=list)  # X-Degraded reasons, each once
    outcomes: Counter = field(default_factory=Counter)  # sent / not_sent / replayed
    problems: list[str] = field(default_factory=list)  # reasons profiles were not sent (log)


def not_served(event: ConnectEvent, reason: str) -> ConnectAnswer:
    """Every profile answered `send: false` with the same reason (e.g. an unknown recommender)."""
    data = _reason_only(reason)
    return ConnectAnswer(_response(event.profiles, [data] * len(event.profiles)),
                         outcomes=Counter(not_sent=len(event.profiles)), problems=[reason])


async def answer_event(
    event: ConnectEvent, recommender: Recommender, *, tenant_id: int, resolver: ItemResolver,
    users: UserRecommendations, replay: ConnectReplay, deadline: Deadline, max_ids: int,
) -> ConnectAnswer:
    """Every profile's ResultData, in order: replayed for a token answered before, else made
    from the profile, Personalize and one resolver call for the batch's IDs."""
    answer = ConnectAnswer(b"")
    profiles = event.profiles
    results: list[bytes | None] = [None] * len(profiles)
    keys: list[ReplayKey | None] = [
        replay_key(tenant_id, recommender.id, p.profile_id, p.token) if p.token else None
        for p in profiles]
    known = await replay.recall([k for k in keys if k is not None], deadline.remaining()) \
        if any(keys) else {}
    reader = ProfileReader(recommender.spec.connect or ConnectSpec(),
                           recommender.spec.personalize is not None, max_ids)
    work: dict[int, Wanted] = {}
    for index, (profile, key) in enumerate(zip(profiles, keys, strict=True)):
        if key is not None and key in known:
            results[index] = known[key]
            answer.outcomes["replayed"] += 1
        else:
            work[index] = reader.wanted(profile)
    if work:
        await _ask_personalize(work.values(), recommender, users, deadline)
        made = await _render_all(work, recommender, resolver, deadline, answer)
        fresh = {key: made[i] for i in work if (key := keys[i]) is not None}
        kept = await replay.keep(fresh) if fresh else {}
        for index, body in made.items():
            key = keys[index]
            results[index] = kept.get(key, body) if key is not None else body
    answer.body = _response(profiles, results)  # type: ignore[arg-type]
    return answer


async def _ask_personalize(work: Sequence[Wanted], recommender: Recommender,
                           users: UserRecommendations, deadline: Deadline) -> None:
    """The IDs of profiles whose items come from Personalize: each user asked once (cached,
    single flight), the fallback where Personalize cannot answer in its share of the budget."""
    asking = [w for w in work if w.user is not None]
    spec = recommender.spec.personalize
    if not asking or spec is None:
        return
    queries = list(dict.fromkeys(w.user for w in asking))
    found = await asyncio.gather(
        *(users.get(recommender.id, spec, q, deadline) for q in queries), return_exceptions=True)
    by_user = dict(zip(queries, found, strict=True))
    for wanted in asking:
        result = by_user[wanted.user]
        if isinstance(result, Recommended):
            wanted.ids = list(result.ids)
            wanted.extras = [{"score": score} for score in result.scores]
            wanted.fields = {"recommendation_id": result.recommendation_id}
        elif isinstance(result, PersonalizeUnavailable):
            wanted.degraded = PERSONALIZE_UNAVAILABLE
            if not spec.fallback_ids:
                wanted.reason = (f"Amazon Personalize could not answer in time ({result.reason})"
                                 " and the recommender has no personalize.fallback_ids")
                continue
            wanted.ids = list(spec.fallback_ids)
            wanted.extras = [{"score": None}] * len(wanted.ids)
            wanted.fields = {"recommendation_id": None}
        else:
            raise result  # type: ignore[misc]  # not Personalize's failure: a bug, a 500


async def _render_all(work: dict[int, Wanted], recommender: Recommender,
                      resolver: ItemResolver, deadline: Deadline,
                      answer: ConnectAnswer) -> dict[int, bytes]:
    """Each profile's ResultData, from one resolver call for every ID of the batch."""
    enricher = recommender.enricher
    servable = [w for w in work.values() if w.reason is None]
    ids = list(dict.fromkeys(i for w in servable for i in w.ids))
    locales = {w.locale for w in servable}
    # Rows kept on L1 entries (as the content route keeps them) are per locale: only when the
    # whole batch has one.
    derived_key = (enricher.derived_key(next(iter(locales)))
                   if len(locales) == 1 and content.serves_json(enricher)
                   and resolver.local.enabled else None)
    resolved = await resolver.resolve(recommender.catalog_id, ids, deadline=deadline,
                                      checked=True, derived_key=derived_key)
    if resolved:  # items to render (none on the warm path): their locales' CLDR data first
        await enricher.prepare_locales(locales, resolved)
    rendered: dict[str, Any] = {}
    made: dict[int, bytes] = {}
    degraded: dict[str, None] = {}
    for index, wanted in work.items():
        if wanted.degraded:
            degraded[wanted.degraded] = None
        if wanted.reason is not None:
            made[index] = _reason_only(wanted.reason)
            answer.outcomes["not_sent"] += 1
            answer.problems.append(wanted.reason)
            continue
        body, send = _profile_answer(recommender.name, enricher, wanted, resolved, rendered)
        made[index] = body
        answer.outcomes["sent" if send else "not_sent"] += 1
    if resolved.degraded:
        degraded[resolved.degraded] = None
    if derived_key is not None and rendered:
        resolver.attach(recommender.catalog_id, derived_key, rendered, resolved.missed)
    answer.degraded = list(degraded)
    return made


def _profile_answer(name: str, enricher: Any, wanted: Wanted, resolved: Any,
                    rendered: dict[str, Any]) -> tuple[bytes, bool]:
    """The content route's answer for the profile's IDs (a reason added when nothing can be
    shown), within RESULT_DATA_LIMIT."""
    body, send, rows = content.answer_bytes(name, enricher, ContentQuery(wanted.ids, wanted.locale),
                                            resolved, wanted.extras, wanted.fields)
    if rows:
        rendered.update(rows)
    if send and within_limit(body):
        return body, send  # the usual profile: nothing more to do
    why_not = (f"the catalog database is unavailable ({resolved.degraded}) and none of these "
               "IDs is cached" if resolved.degraded else NOTHING_SHOWN)

    def answer_for(count: int, truncated: bool) -> tuple[bytes, bool]:
        query = ContentQuery(wanted.ids[:count], wanted.locale)
        extras = wanted.extras[:count] if wanted.extras is not None else None
        fields = {**(wanted.fields or {}), "truncated": True} if truncated else wanted.fields
        body, send, rows = content.answer_bytes(name, enricher, query, resolved, extras, fields)
        rendered.update(rows)
        if not send:
            body, _, _ = content.answer_bytes(name, enricher, query, resolved, extras,
                                              {**(fields or {}), "reason": why_not})
        return body, send

    body, send = answer_for(len(wanted.ids), False) if not send else (body, send)
    if within_limit(body):
        return body, send
    return _fit(lambda count: answer_for(count, True), len(wanted.ids))


def _fit(answer_for: Callable[[int], tuple[bytes, bool]], count: int) -> tuple[bytes, bool]:
    """The answer for the most leading IDs that fits RESULT_DATA_LIMIT (an answer grows with
    its IDs: each adds an item or a missing ID), found by bisection."""
    best: tuple[bytes, bool] | None = None
    low, high = 1, count - 1
    while low <= high:
        middle = (low + high) // 2
        candidate = answer_for(middle)
        if within_limit(candidate[0]):
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    if best is not None:
        return best
    return orjson.dumps({
        "send": False, "truncated": True,
        "reason": f"even the first item's content is over the {RESULT_DATA_LIMIT}-byte "
                  "ResultData limit"}), False


def within_limit(body: bytes) -> bool:
    """Is `body` at most RESULT_DATA_LIMIT bytes however the runtime writes it? By its length
    alone when short (no byte becomes more than 3: a `,` or `:` gains a space, a character of
    2 or 4 UTF-8 bytes becomes a `\\u` escape of 6 or 12), then by a closer bound (each non-ASCII
    character grows at most 4 bytes per UTF-8 byte past its first), then, near the limit,
    exactly."""
    if len(body) <= RESULT_DATA_LIMIT // 3:  # no byte is written as more than 3
        return True
    bound = len(body) + body.count(b",") + body.count(b":")
    if not body.isascii():
        bound += 4 * (len(body) - len(body.decode()))
    return bound <= RESULT_DATA_LIMIT or result_data_size(body) <= RESULT_DATA_LIMIT


def result_data_size(body: bytes) -> int:
    """Bytes of `body` as Python's `json.dumps` writes it by default (the Lambda runtime's)."""
    return len(json.dumps(json.loads(body)))


def _reason_only(reason: str) -> bytes:
    return orjson.dumps({"send": False, "reason": reason})


def _response(profiles: Sequence[Profile], results: Sequence[bytes]) -> bytes:
    dumps = orjson.dumps
    parts = [b'{"Items":{"CustomerProfiles":[']
    for profile, data in zip(profiles, results, strict=True):
        parts += (b'{"Id":', dumps(profile.profile_id), b',"ResultData":', data, b"},")
    if results:
        parts[-1] = b"}"  # no comma after the last
    parts.append(b"]}}")
    return b"".join(parts)
