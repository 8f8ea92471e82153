"""The shim's API key from Secrets Manager or SSM: read once per cold start with boto3.

AWS is stood in for by a real local HTTP server speaking the two services' JSON protocol (boto3
is pointed at it with AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_SSM), so boto3 signs,
sends and parses real requests; the shim then calls the real service under test.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import orjson
import pytest
from aiohttp import web

from service import lambda_shim
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.lambda_context import LambdaContext

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:enricher-key-AbCdEf"
PARAMETER = "/catalog-enricher/api-key"


@dataclass
class FakeAws:
    """Secrets Manager and SSM, as far as the shim uses them; counts what it is asked."""

    secret: str | None = None
    parameter: str | None = None
    calls: list[tuple[str, dict]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = orjson.loads(await request.read())
        self.calls.append((target, body))
        if target == "secretsmanager.GetSecretValue" and self.secret is not None:
            return self.answer({"ARN": body["SecretId"], "Name": "enricher-key",
                                "SecretString": self.secret})
        if target == "AmazonSSM.GetParameter" and self.parameter is not None:
            return self.answer({"Parameter": {"Name": body["Name"], "Type": "SecureString",
                                              "Value": self.parameter}})
        kind = "ParameterNotFound" if target.startswith("AmazonSSM") else \
            "ResourceNotFoundException"
        return self.answer({"__type": kind, "message": "not found"}, status=400)

    @staticmethod
    def answer(data: dict, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(data), status=status,
                            content_type="application/x-amz-json-1.1")


@pytest.fixture
async def service_key(admin: Api, make_key) -> str:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"))
    return await make_key("acme", "transform")


@pytest.fixture
async def fake_aws(aiohttp_server, monkeypatch, admin: Api) -> Iterator[FakeAws]:
    fake = FakeAws()
    app = web.Application()
    app.router.add_post("/", fake.handle)
    server = await aiohttp_server(app)
    endpoint = f"http://127.0.0.1:{server.port}"
    for name in ("ENRICHER_API_KEY", "ENRICHER_API_KEY_SECRET_ARN", "ENRICHER_API_KEY_PARAMETER",
                 "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", endpoint)
    monkeypatch.setenv("ENRICHER_URL",
                       f"http://127.0.0.1:{admin.client.server.port}/v1/recommenders/movies/transform")
    boto3.DEFAULT_SESSION = None  # a session made under another environment must not be reused
    cold_start()
    yield fake
    cold_start()
    boto3.DEFAULT_SESSION = None


def cold_start() -> None:
    """A new Lambda container: the module is loaded afresh (the old one's socket closed, as the
    container's end would)."""
    lambda_shim._close()
    importlib.reload(lambda_shim)


EVENT = {"Endpoints": {"e1": {"RecommendationItems": ["1"]}}}


async def invoke():
    return await asyncio.to_thread(lambda_shim.handler, EVENT, LambdaContext())


class TestKeyFromSecretsManager:
    """ENRICHER_API_KEY_SECRET_ARN: the secret is read once per cold start."""

    async def test_read_once_per_cold_start(self, fake_aws: FakeAws, service_key, monkeypatch):
        fake_aws.secret = service_key
        monkeypatch.setenv("ENRICHER_API_KEY_SECRET_ARN", SECRET_ARN)
        for _ in range(3):
            answer = await invoke()
            assert answer["e1"]["Recommendations"] == {"Title": ["One"]}
        assert [target for target, _ in fake_aws.calls] == ["secretsmanager.GetSecretValue"]
        assert fake_aws.calls[0][1]["SecretId"] == SECRET_ARN
        cold_start()
        await invoke()
        assert len(fake_aws.calls) == 2

    async def test_json_secret_with_api_key_field(self, fake_aws: FakeAws, service_key,
                                                  monkeypatch):
        fake_aws.secret = orjson.dumps({"api_key": service_key}).decode()
        monkeypatch.setenv("ENRICHER_API_KEY_SECRET_ARN", SECRET_ARN)
        assert (await invoke())["e1"]["Recommendations"] == {"Title": ["One"]}

    async def test_unreadable_secret_names_it_and_is_retried(self, fake_aws: FakeAws,
                                                             service_key, monkeypatch):
        monkeypatch.setenv("ENRICHER_API_KEY_SECRET_ARN", SECRET_ARN)
        with pytest.raises(lambda_shim.EnricherError,
                           match=r"ENRICHER_API_KEY_SECRET_ARN=.*ResourceNotFoundException"):
            await invoke()
        fake_aws.secret = service_key  # fixed meanwhile: the next invocation reads it
        assert (await invoke())["e1"]["Recommendations"] == {"Title": ["One"]}
        assert len(fake_aws.calls) == 2

    async def test_wrong_key_never_appears_in_the_error(self, fake_aws: FakeAws, service_key,
                                                        monkeypatch):
        fake_aws.secret = "ce_" + "Z" * 43
        monkeypatch.setenv("ENRICHER_API_KEY_SECRET_ARN", SECRET_ARN)
        with pytest.raises(lambda_shim.EnricherError, match="HTTP 401") as raised:
            await invoke()
        assert "Z" * 43 not in str(raised.value)


class TestKeyFromParameterStore:
    """ENRICHER_API_KEY_PARAMETER: a SecureString read with decryption, once per cold start."""

    async def test_read_once_with_decryption(self, fake_aws: FakeAws, service_key, monkeypatch):
        fake_aws.parameter = service_key
        monkeypatch.setenv("ENRICHER_API_KEY_PARAMETER", PARAMETER)
        await invoke()
        await invoke()
        assert fake_aws.calls == [("AmazonSSM.GetParameter",
                                   {"Name": PARAMETER, "WithDecryption": True})]


class TestKeySources:
    """Exactly one source names the key; the plain variable works as before."""

    async def test_two_sources_refused(self, fake_aws: FakeAws, monkeypatch):
        monkeypatch.setenv("ENRICHER_API_KEY", "x")
        monkeypatch.setenv("ENRICHER_API_KEY_PARAMETER", PARAMETER)
        with pytest.raises(lambda_shim.EnricherError, match="only one of"):
            await invoke()
        assert fake_aws.calls == []

    async def test_none_set(self, fake_aws: FakeAws):
        with pytest.raises(lambda_shim.EnricherError, match="ENRICHER_API_KEY is not set"):
            await invoke()

    async def test_plain_key_needs_no_boto3(self, fake_aws: FakeAws, service_key, monkeypatch):
        monkeypatch.setenv("ENRICHER_API_KEY", service_key)
        monkeypatch.setitem(__import__("sys").modules, "boto3", None)  # import would fail
        assert (await invoke())["e1"]["Recommendations"] == {"Title": ["One"]}
        assert fake_aws.calls == []
