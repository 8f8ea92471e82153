"""Recommenders as validated data: which catalog, which attributes, what to do with missing items.

A recommender is what a Pinpoint recommender model (or any other caller) names when it asks for
enrichment. Its attributes follow Pinpoint's own rules, checked here so that a recommender that
saves is one Pinpoint accepts: 1 to 10 attributes, names `^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$`,
case-sensitive and unique, display names of at most 25 characters.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from service.enrichment.locales import TAG_PATTERN, babel_locale, normalize_tag
from service.errors import FieldError, ValidationFailed
from service.items import item_id_problem, json_type

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ATTRIBUTE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")
DISPLAY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9 _-]{1,25}$")
ATTRIBUTE_KEY_PATTERN = re.compile(r"^attributes\.(.{1,200})$", re.DOTALL)
BASE_FIELDS = ("id", "title", "genre", "price", "image_url", "url", "available")
FORMATS = ("currency",)
MISSING_ITEM_POLICIES = ("skip", "placeholder", "drop_endpoint")
MAX_ATTRIBUTES = 10
MAX_PER_MESSAGE = 5
MAX_TRUNCATE = 10_000
MAX_PLACEHOLDER = 1000
MAX_DISPLAY_NAME = 25
MAX_TEMPLATE = 2000
# Pinpoint project IDs are 32 hex characters; other callers' IDs are allowed within this shape.
APPLICATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_APPLICATION_IDS = 100
# Cache-Control max-age of the send-time content route's answers (a day at most).
DEFAULT_CONTENT_MAX_AGE = 300
MAX_CONTENT_MAX_AGE = 86_400
RECOMMENDER_FIELDS = (
    "catalog", "attributes", "missing_items", "recommendations_per_message", "locale",
    "application_ids", "content_max_age", "personalize", "connect",
)
# The optional `personalize` block (issue 12): where the user route gets a user's item IDs.
PERSONALIZE_FIELDS = (
    "campaign_arn", "recommender_arn", "filter_arn", "num_results", "cache_seconds", "fallback_ids",
)
# Personalize's own ARN rule (botocore's personalize-runtime model: `Arn`, at most 256
# characters), with the resource type each field names.
PERSONALIZE_ARN = r"^arn:[a-z\d-]+:personalize:[a-z\d-]*:\d{12}:{kind}/[A-Za-z\d][A-Za-z\d_.-]*$"
MAX_ARN_LENGTH = 256
PERSONALIZE_ARN_KINDS = {"campaign_arn": "campaign", "recommender_arn": "recommender",
                         "filter_arn": "filter"}
MAX_NUM_RESULTS = 50
MAX_CACHE_SECONDS = 3600
DEFAULT_CACHE_SECONDS = 60
MAX_FALLBACK_IDS = 50
# The optional `connect` block: where the Amazon Connect route finds, in each customer profile
# (the parsed CustomerData), its item IDs, its Personalize user ID and its locale. Each is a
# dotted path of object keys (`Attributes.recommended_items`): 1-10 keys of 1-255 characters,
# none holding a dot or a control character (Customer Profiles' own keys are at most 255).
CONNECT_FIELDS = ("ids_from", "user_id_from", "locale_from")
PROFILE_PATH = re.compile(r"^[^.\x00-\x1f\x7f]{1,255}(?:\.[^.\x00-\x1f\x7f]{1,255}){0,9}$")
DEFAULT_USER_ID_FROM = "ProfileId"
ROUND_TRIP_FIELDS = ("name", "updated_at")
ATTRIBUTE_FIELDS = (
    "name", "field", "display_name", "format", "template", "truncate", "first", "placeholder",
)


@dataclass(frozen=True)
class AttributeSpec:
    """One `Recommendations.<name>` attribute and how its value is made from an item."""

    name: str
    field: str
    display_name: str | None = None
    format: str | None = None
    template: str | None = None
    truncate: int | None = None
    first: bool = False
    placeholder: str = ""

    @property
    def shown_name(self) -> str:
        """What Pinpoint shows for the attribute: its display name, else its name."""
        return self.display_name or self.name


@dataclass(frozen=True)
class PersonalizeSpec:
    """Where the user route asks Amazon Personalize for a user's items, and what it serves when
    Personalize cannot answer."""

    campaign_arn: str | None = None
    recommender_arn: str | None = None
    filter_arn: str | None = None
    num_results: int = MAX_PER_MESSAGE
    cache_seconds: int = DEFAULT_CACHE_SECONDS
    fallback_ids: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: getattr(self, k) for k in ("campaign_arn", "recommender_arn",
                                                               "filter_arn")
                                if getattr(self, k) is not None}
        data.update(num_results=self.num_results, cache_seconds=self.cache_seconds,
                    fallback_ids=list(self.fallback_ids))
        return data

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> PersonalizeSpec:
        return cls(**{**stored, "fallback_ids": tuple(stored.get("fallback_ids", ()))})


@dataclass(frozen=True)
class ConnectSpec:
    """Where the Connect route reads a customer profile: its item IDs (`ids_from`; without it,
    Personalize is asked for the user at `user_id_from`) and its locale (`locale_from`; without
    it, or where a profile has none, the recommender's)."""

    ids_from: str | None = None
    user_id_from: str = DEFAULT_USER_ID_FROM
    locale_from: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONNECT_FIELDS if getattr(self, k) is not None}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> ConnectSpec:
        return cls(**stored)


@dataclass(frozen=True)
class RecommenderSpec:
    catalog: str
    attributes: tuple[AttributeSpec, ...]
    missing_items: str = "skip"
    recommendations_per_message: int = MAX_PER_MESSAGE
    locale: str = "en_US"
    application_ids: tuple[str, ...] = field(default_factory=tuple)
    content_max_age: int = DEFAULT_CONTENT_MAX_AGE
    personalize: PersonalizeSpec | None = None
    connect: ConnectSpec | None = None

    def as_json(self) -> dict[str, Any]:
        return {**self.stored_json(), "application_ids": list(self.application_ids)}

    def stored_json(self) -> dict[str, Any]:
        """What the `spec` column holds: bindings live in their own table, where the database
        can hold one recommender per application ID across the deployment."""
        return {
            "catalog": self.catalog,
            "attributes": [_attribute_json(a) for a in self.attributes],
            "missing_items": self.missing_items,
            "recommendations_per_message": self.recommendations_per_message,
            "locale": self.locale,
            "content_max_age": self.content_max_age,
            **({"personalize": self.personalize.as_json()} if self.personalize else {}),
            **({"connect": self.connect.as_json()} if self.connect else {}),
        }

    @classmethod
    def from_stored(
        cls, stored: dict[str, Any], catalog: str, application_ids: tuple[str, ...] = ()
    ) -> RecommenderSpec:
        """Rebuild from the `spec` column (written by `stored_json`, so already valid)."""
        return cls(
            catalog=catalog,
            attributes=tuple(AttributeSpec(**a) for a in stored["attributes"]),
            missing_items=stored["missing_items"],
            recommendations_per_message=stored["recommendations_per_message"],
            locale=stored["locale"],
            application_ids=tuple(application_ids),
            # Definitions stored before the field existed get its default (no migration needed).
            content_max_age=stored.get("content_max_age", DEFAULT_CONTENT_MAX_AGE),
            personalize=(PersonalizeSpec.from_stored(stored["personalize"])
                         if stored.get("personalize") else None),
            connect=(ConnectSpec.from_stored(stored["connect"])
                     if stored.get("connect") else None),
        )


def _attribute_json(attribute: AttributeSpec) -> dict[str, Any]:
    data = asdict(attribute)
    # Defaults are left out so a GET answer reads like what was written.
    defaults = asdict(AttributeSpec(name="", field=""))
    return {k: v for k, v in data.items() if k in ("name", "field") or v != defaults[k]}


def check_recommender_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValidationFailed.of(
            "recommender", "must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
        )
    return name


def parse_recommender(body: object, name: str) -> RecommenderSpec:
    """Validate a recommender body; raise ValidationFailed naming every bad field."""
    if not isinstance(body, dict):
        raise ValidationFailed.of("body",
                                  f"a recommender must be a JSON object, got {json_type(body)}")
    errors: list[FieldError] = []

    def fail(where: str, reason: str) -> None:
        errors.append(FieldError(where, reason))

    for key in body:
        if key not in RECOMMENDER_FIELDS and key not in ROUND_TRIP_FIELDS:
            fail(key, "is not a recommender field (expected one of: "
                 + ", ".join(RECOMMENDER_FIELDS) + ")")
    if "name" in body and body["name"] != name:
        fail("name", f"must match the recommender name in the path ({name!r}) when given")

    catalog = body.get("catalog")
    if not isinstance(catalog, str) or not NAME_PATTERN.match(catalog):
        fail("catalog", "is required: the name of one of your catalogs")
        catalog = ""

    attributes = _parse_attributes(body.get("attributes"), fail)

    missing_items = body.get("missing_items", "skip")
    if missing_items not in MISSING_ITEM_POLICIES:
        fail("missing_items", "must be one of: " + ", ".join(MISSING_ITEM_POLICIES))

    per_message = body.get("recommendations_per_message", MAX_PER_MESSAGE)
    if (not isinstance(per_message, int) or isinstance(per_message, bool)
            or not 1 <= per_message <= MAX_PER_MESSAGE):
        fail("recommendations_per_message", f"must be an integer from 1 to {MAX_PER_MESSAGE}")

    locale = body.get("locale", "en_US")
    if not isinstance(locale, str) or not TAG_PATTERN.match(locale):
        fail("locale", "must be a locale tag like en_US or de")
    elif babel_locale(locale) is None:
        fail("locale", f"{locale!r} is not a locale known to CLDR (e.g. en_US, de_DE, ja_JP)")
    else:
        locale = normalize_tag(locale)

    application_ids = _parse_application_ids(body.get("application_ids", []), fail)

    content_max_age = body.get("content_max_age", DEFAULT_CONTENT_MAX_AGE)
    if (not isinstance(content_max_age, int) or isinstance(content_max_age, bool)
            or not 0 <= content_max_age <= MAX_CONTENT_MAX_AGE):
        fail("content_max_age", f"must be an integer from 0 to {MAX_CONTENT_MAX_AGE} (seconds)")

    personalize = None
    if body.get("personalize") is not None:
        personalize = _parse_personalize(body["personalize"], per_message, fail)

    connect = None
    if body.get("connect") is not None:
        connect = _parse_connect(body["connect"], body.get("personalize") is not None, fail)

    if errors:
        raise ValidationFailed.of_many(errors)
    return RecommenderSpec(
        catalog=catalog, attributes=tuple(attributes), missing_items=missing_items,
        recommendations_per_message=per_message, locale=locale,
        application_ids=tuple(application_ids), content_max_age=content_max_age,
        personalize=personalize, connect=connect,
    )


class _SubObject:
    """Checks of one object inside a recommender (an attribute, the personalize block): every
    problem is reported under `where`, and `ok` says whether any was."""

    def __init__(self, where: str, raw: dict, fields: tuple[str, ...], kind: str,
                 fail: Any) -> None:
        self.where = where
        self.fail = fail
        self.ok = True
        for key in raw:
            if key not in fields:
                self.bad(key, f"is not {kind} field (expected one of: " + ", ".join(fields) + ")")

    def bad(self, key: str, reason: str) -> None:
        self.ok = False
        self.fail(f"{self.where}.{key}", reason)


def _parse_personalize(raw: object, per_message: object, fail: Any) -> PersonalizeSpec | None:
    if not isinstance(raw, dict):
        fail("personalize", 'must be an object like {"campaign_arn": "arn:aws:personalize:…"}')
        return None
    check = _SubObject("personalize", raw, PERSONALIZE_FIELDS, "a personalize", fail)
    bad = check.bad
    arns: dict[str, str | None] = {}
    for key, kind in PERSONALIZE_ARN_KINDS.items():
        value = raw.get(key)
        if value is not None and not (
            isinstance(value, str) and len(value) <= MAX_ARN_LENGTH
            and re.match(PERSONALIZE_ARN.replace("{kind}", kind), value)
        ):
            bad(key, f"must be a Personalize {kind} ARN like "
                f"arn:aws:personalize:us-east-1:123456789012:{kind}/name")
        arns[key] = value
    if (arns["campaign_arn"] is None) == (arns["recommender_arn"] is None):
        bad("recommender_arn" if arns["campaign_arn"] else "campaign_arn",
            "exactly one of campaign_arn and recommender_arn is required")
    default_results = per_message if isinstance(per_message, int) else MAX_PER_MESSAGE
    num_results = raw.get("num_results", default_results)
    if (not isinstance(num_results, int) or isinstance(num_results, bool)
            or not 1 <= num_results <= MAX_NUM_RESULTS):
        bad("num_results", f"must be an integer from 1 to {MAX_NUM_RESULTS}")
    cache_seconds = raw.get("cache_seconds", DEFAULT_CACHE_SECONDS)
    if (not isinstance(cache_seconds, int) or isinstance(cache_seconds, bool)
            or not 0 <= cache_seconds <= MAX_CACHE_SECONDS):
        bad("cache_seconds", f"must be an integer from 0 to {MAX_CACHE_SECONDS} (seconds)")
    fallback_ids = raw.get("fallback_ids", [])
    if not isinstance(fallback_ids, list):
        bad("fallback_ids", "must be an array of item IDs")
        fallback_ids = []
    elif len(fallback_ids) > MAX_FALLBACK_IDS:
        bad("fallback_ids", f"at most {MAX_FALLBACK_IDS} IDs, got {len(fallback_ids)}")
    for index, item_id in enumerate(fallback_ids):
        problem = item_id_problem(item_id)
        if problem:
            bad(f"fallback_ids[{index}]", problem)
    if not check.ok:
        return None
    return PersonalizeSpec(
        campaign_arn=arns["campaign_arn"], recommender_arn=arns["recommender_arn"],
        filter_arn=arns["filter_arn"], num_results=num_results, cache_seconds=cache_seconds,
        fallback_ids=tuple(fallback_ids),
    )


def _parse_connect(raw: object, has_personalize: bool, fail: Any) -> ConnectSpec | None:
    if not isinstance(raw, dict):
        fail("connect", 'must be an object like {"ids_from": "Attributes.recommended_items"}')
        return None
    check = _SubObject("connect", raw, CONNECT_FIELDS, "a connect", fail)
    paths: dict[str, str | None] = {}
    for key in CONNECT_FIELDS:
        value = raw.get(key)
        if value is not None and not (isinstance(value, str) and PROFILE_PATH.match(value)):
            check.bad(key, "must be a dotted path into the customer profile, like "
                      "Attributes.recommended_items (1-10 keys of 1-255 characters, no control "
                      "characters)")
        paths[key] = value
    if paths["ids_from"] is None and not has_personalize:
        check.bad("ids_from", "is required unless the recommender has a personalize block "
                  "(then Amazon Personalize gives each profile's items)")
    if not check.ok:
        return None
    return ConnectSpec(ids_from=paths["ids_from"],
                       user_id_from=paths["user_id_from"] or DEFAULT_USER_ID_FROM,
                       locale_from=paths["locale_from"])


def _parse_application_ids(raw: object, fail: Any) -> list[str]:
    if not isinstance(raw, list):
        fail("application_ids", "must be an array of Pinpoint application (project) IDs")
        return []
    if len(raw) > MAX_APPLICATION_IDS:
        fail("application_ids", f"at most {MAX_APPLICATION_IDS} application IDs, got {len(raw)}")
    seen: set[str] = set()
    for index, application_id in enumerate(raw):
        if not isinstance(application_id, str) or not APPLICATION_ID_PATTERN.match(application_id):
            fail(f"application_ids[{index}]",
                 "must be a Pinpoint application (project) ID: 1-64 letters, digits, '_' or '-'")
        elif application_id in seen:
            fail(f"application_ids[{index}]", f"repeats the application ID {application_id!r}")
        else:
            seen.add(application_id)
    return raw


def _parse_attributes(raw: object, fail: Any) -> list[AttributeSpec]:
    if not isinstance(raw, list) or not raw:
        fail("attributes", 'is required: an array like [{"name": "Title", "field": "title"}]')
        return []
    if len(raw) > MAX_ATTRIBUTES:
        fail("attributes", f"Pinpoint allows at most {MAX_ATTRIBUTES} attributes, got {len(raw)}")
    parsed: list[AttributeSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"attributes[{index}]"
        if not isinstance(entry, dict):
            fail(where, f"must be an object, got {json_type(entry)}")
            continue
        attribute = _parse_attribute(entry, where, fail)
        if attribute is None:
            continue
        if attribute.name in seen:
            fail(f"{where}.name", f"duplicates the attribute name {attribute.name!r}")
        seen.add(attribute.name)
        parsed.append(attribute)
    return parsed


def _parse_attribute(entry: dict, where: str, fail: Any) -> AttributeSpec | None:
    check = _SubObject(where, entry, ATTRIBUTE_FIELDS, "an attribute", fail)
    bad = check.bad
    name = entry.get("name")
    if not isinstance(name, str) or not ATTRIBUTE_NAME_PATTERN.match(name):
        bad("name", "must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$ (Pinpoint's rule)")
    item_field = entry.get("field")
    if not isinstance(item_field, str) or not (
        item_field in BASE_FIELDS or ATTRIBUTE_KEY_PATTERN.match(item_field)
    ):
        bad("field", "must be one of " + ", ".join(BASE_FIELDS) + " or attributes.<key>")
    display_name = entry.get("display_name")
    if display_name is not None and (
        not isinstance(display_name, str) or not DISPLAY_NAME_PATTERN.match(display_name)
    ):
        bad("display_name", "must be 1-25 letters, digits, spaces, '_' or '-' (Pinpoint's rule)")
    elif display_name is None and isinstance(name, str) and len(name) > MAX_DISPLAY_NAME:
        # Pinpoint shows each attribute under a display name of at most 25 characters; the name
        # stands in for it when it fits, so a longer name needs one of its own.
        bad("display_name", f"is required when the name is longer than {MAX_DISPLAY_NAME} "
            "characters (Pinpoint's display names are at most 25)")
    value_format = entry.get("format")
    if value_format is not None and value_format not in FORMATS:
        bad("format", "must be one of: " + ", ".join(FORMATS)
            + " (template, truncate and first are attribute keys of their own)")
    elif value_format == "currency" and item_field != "price":
        bad("format", "currency applies to the price field only")
    template = entry.get("template")
    if template is not None and (
        not isinstance(template, str)
        or ("{value}" not in template and "{id}" not in template)
        or len(template) > MAX_TEMPLATE
    ):
        bad("template", f"must be a string of at most {MAX_TEMPLATE} characters holding {{value}} "
            "or {id}")
    elif isinstance(template, str):
        problem = template_problem(template)
        if problem:
            bad("template", problem)
    truncate = entry.get("truncate")
    if truncate is not None and (
        not isinstance(truncate, int) or isinstance(truncate, bool)
        or not 1 <= truncate <= MAX_TRUNCATE
    ):
        bad("truncate", f"must be an integer from 1 to {MAX_TRUNCATE}")
    first = entry.get("first", False)
    if not isinstance(first, bool):
        bad("first", "must be true or false")
    placeholder = entry.get("placeholder", "")
    if not isinstance(placeholder, str) or len(placeholder) > MAX_PLACEHOLDER:
        bad("placeholder", f"must be a string of at most {MAX_PLACEHOLDER} characters")
    if not check.ok:
        return None
    return AttributeSpec(
        name=name, field=item_field, display_name=display_name, format=value_format,
        template=template, truncate=truncate, first=first, placeholder=placeholder,
    )


def template_problem(template: str) -> str | None:
    """Why a template is unusable: only {value} and {id} may appear in braces."""
    for match in re.finditer(r"\{([^{}]*)\}", template):
        if match.group(1) not in ("value", "id"):
            return f"has an unknown placeholder {{{match.group(1)}}} (only {{value}} and {{id}})"
    stripped = re.sub(r"\{(value|id)\}", "", template)
    if "{" in stripped or "}" in stripped:
        return "has an unbalanced brace"
    return None
