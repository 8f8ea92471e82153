"""What Braze and Iterable do with a message template at send time, with real template engines, so
the snippets of docs/send-time-content.md can be rendered against a live service.

Braze (Connected Content, Liquid, python-liquid): `${attribute}` personalization tags; the
`url_param_escape` filter; `{% connected_content URL [:basic_auth NAME] [:retry] [:save VAR] ... %}`,
whose URL is Liquid rendered first, which GETs it with the stored basic credential, saves a JSON
answer under VAR (`connected` by default) with `__http_status_code__` added when it is an object,
renders a 404's non-JSON body as an empty string, retries a 5xx when `:retry` is given (and aborts
the message when every attempt failed); `{% abort_message("reason") %}`, which stops the message.

Iterable (a data feed, Handlebars, pybars3): the feed's URL is rendered with the user's fields
(`{{…}}`) and fetched with the feed's headers; any non-200, or a JSON answer that is not an
object, skips the send (`DataFeedError`); the template's user fields are `{{…}}` and the feed's
`[[…]]` (or `{{…}}` with "merge the data feed and user contexts"); an email that renders no
content at all is skipped (`EmptyContent`).

Both reach the service through `fetch(url, headers) -> (status, body)`; the docs' host
(`https://enricher.example.com`) stands for the service under test.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO
from urllib.parse import quote

import orjson
import pybars
from liquid import Environment
from liquid.ast import Node
from liquid.tag import Tag
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG

Fetch = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, bytes]]]

BRAZE_RETRIES = 5  # Braze's :retry makes up to five attempts on a 5xx, then aborts


class MessageAborted(Exception):
    """`{% abort_message() %}` ran, or Connected Content failed every retry: nothing is sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Braze ----------------------------------------------------------------------------------------

class _RawTagNode(Node):
    """A tag whose expression is kept as written (Braze's tags take a URL and options, not a
    Liquid expression)."""

    __slots__ = ("expression",)

    def __init__(self, token: Any, expression: str) -> None:
        super().__init__(token)
        self.expression = expression

    def render_to_output(self, context: Any, buffer: TextIO) -> int:
        raise NotImplementedError("Braze's tags make HTTP calls: render with render_async")


class _RawTag(Tag):
    node_class: type[_RawTagNode]

    def parse(self, stream: Any) -> Node:
        token = stream.eat(TOKEN_TAG)
        expression = ""
        if stream.current.kind == TOKEN_EXPRESSION:
            expression = stream.current.value
            stream.next()
        return self.node_class(token, expression)


class ConnectedContentNode(_RawTagNode):
    async def render_to_output_async(self, context: Any, buffer: TextIO) -> int:
        braze: BrazeRenderer = context.globals["__braze__"]
        # Liquid in the tag (the URL's `{{ … }}`) is rendered first, with the message's variables.
        expanded = io.StringIO()
        await braze.env.from_string(self.expression).render_with_context_async(context, expanded)
        words = expanded.getvalue().split()
        url, options = words[0], _options(words[1:])
        headers = {"User-Agent": "Braze Sender", "Accept": "application/json"}
        if "basic_auth" in options:
            user, password = braze.credentials[options["basic_auth"]]
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{user}:{password}".encode()).decode()
        attempts = BRAZE_RETRIES if "retry" in options else 1
        for _ in range(attempts):
            status, body = await braze.fetch(url, headers)
            braze.calls.append((url, status))
            if status < 500:
                break
        else:
            if "retry" in options:
                raise MessageAborted(f"Connected Content failed {attempts} times: {url}")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Text is put in the message in place of the tag; a 404 page renders as "".
            if "save" not in options and status != 404:
                buffer.write(body.decode(errors="replace"))
            return 0
        if isinstance(value, dict):
            value["__http_status_code__"] = status
        context.assign(options.get("save", "connected"), value)
        return 0


def _options(words: list[str]) -> dict[str, str]:
    """`:name value` and bare `:flag` options of a Connected Content tag."""
    options: dict[str, str] = {}
    name = None
    for word in words:
        if word.startswith(":"):
            name = word[1:]
            options[name] = ""
        elif name is not None:
            options[name] = word
            name = None
    return options


class ConnectedContentTag(_RawTag):
    name = "connected_content"
    block = False
    node_class = ConnectedContentNode


class AbortMessageNode(_RawTagNode):
    async def render_to_output_async(self, context: Any, buffer: TextIO) -> int:
        reason = self.expression.strip().removeprefix("(").removesuffix(")").strip()
        raise MessageAborted(shlex.split(reason)[0] if reason else "")


class AbortMessageTag(_RawTag):
    name = "abort_message"
    block = False
    node_class = AbortMessageNode


class BrazeRenderer:
    """Renders a Braze message body for one user; `calls` records each Connected Content GET."""

    def __init__(self, fetch: Fetch, credentials: Mapping[str, tuple[str, str]]) -> None:
        self.fetch = fetch
        self.credentials = credentials
        self.calls: list[tuple[str, int]] = []
        self.env = Environment()
        self.env.add_tag(ConnectedContentTag)
        self.env.add_tag(AbortMessageTag)
        self.env.add_filter("url_param_escape", lambda value: quote(str(value), safe=""))

    async def render(self, body: str, user: Mapping[str, Any]) -> str:
        """The message as sent; MessageAborted when it is not. `user` holds the standard attributes
        (`language`, `user_id`, ...) and `custom_attribute`."""
        # `${name}` is Braze's spelling of a user attribute inside Liquid.
        source = re.sub(r"\$\{(\w+)\}", r"\1", body)
        template = self.env.from_string(source, globals={"__braze__": self})
        return await template.render_async(**user)


# --- Iterable -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class IterableSend:
    """A message Iterable sent (`content`), or the send skip it recorded (`skipped`)."""

    content: str | None = None
    skipped: str | None = None


class IterableDataFeed:
    """One data feed: its URL (Handlebars, user fields) and the headers Iterable sends."""

    def __init__(self, fetch: Fetch, url: str, headers: Mapping[str, str], *,
                 merge_contexts: bool = False) -> None:
        self.fetch = fetch
        self.url = url
        self.headers = dict(headers)
        self.merge_contexts = merge_contexts
        self.compiler = pybars.Compiler()

    def _render(self, source: str, context: Mapping[str, Any]) -> str:
        return str(self.compiler.compile(source)(dict(context)))

    async def send(self, template: str, user: Mapping[str, Any]) -> IterableSend:
        url = self._render(self.url.strip(), user)
        status, body = await self.fetch(url, self.headers)
        if status != 200:
            return IterableSend(skipped="DataFeedError")
        feed = orjson.loads(body)
        if not isinstance(feed, dict):  # a JSON data feed must answer a top-level object
            return IterableSend(skipped="DataFeedError")
        if self.merge_contexts:
            content = self._render(template, {**user, **feed})
        else:
            with_user = self._render(template, user)
            content = self._render(with_user.replace("[[", "{{").replace("]]", "}}"), feed)
        if not content.strip():
            return IterableSend(skipped="EmptyContent")
        return IterableSend(content=content)
