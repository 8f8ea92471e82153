"""`catalog-enricher pinpoint-config`: the CreateRecommenderConfiguration Pinpoint will accept.

The output is checked with botocore's own parameter validator against the Pinpoint service model,
and sent through a botocore client whose HTTP layer is replaced by botocore's Stubber, so the
request is built and serialized exactly as `aws pinpoint create-recommender-configuration` would,
with no network.
"""

from __future__ import annotations

import asyncio
import json
import sys

import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from service.cli import build_parser, print_pinpoint_config
from service.runtime.settings import Settings
from service.storage.db import connect
from tests.support.api import Api
from tests.support.catalogs import load_catalog

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:catalog-enricher-shim"
CAMPAIGN = "arn:aws:personalize:us-east-1:123456789012:campaign/movies"
ROLE = "arn:aws:iam::123456789012:role/PinpointPersonalize"


def pinpoint_operation():
    model = botocore.session.get_session().get_service_model("pinpoint")
    return model.operation_model("CreateRecommenderConfiguration")


def botocore_errors(config: dict) -> str:
    report = ParamValidator().validate({"CreateRecommenderConfiguration": config},
                                       pinpoint_operation().input_shape)
    return report.generate_report() if report.has_errors() else ""


@pytest.fixture
async def recommender(admin: Api) -> Api:
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}])
    status, body, _ = await admin.put("/v1/recommenders/movies.v2", {
        "catalog": "movies", "recommendations_per_message": 3,
        "attributes": [
            {"name": "Title", "field": "title"},
            {"name": "Price", "field": "price", "format": "currency",
             "display_name": "Price today"},
            {"name": "Poster_image-url-for-the-large-email-layout", "field": "image_url",
             "display_name": "Poster"},
        ]})
    assert status == 201, body
    return admin


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "pinpoint-config", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


class TestPinpointConfig:
    """The printed object is what Pinpoint takes, with names taken from the recommender."""

    async def test_output_passes_botocore_validation(self, recommender, subprocess_env,
                                                     aws_isolated):
        code, out, err = await run_cli(
            subprocess_env, "--tenant", "acme", "--recommender", "movies.v2",
            "--function-arn", FUNCTION, "--campaign-arn", CAMPAIGN, "--role-arn", ROLE,
            "--description", "Movies for the weekly email",
        )
        assert code == 0, err
        config = json.loads(out)
        assert config == {
            "Name": "movies-v2",
            "RecommendationTransformerUri": FUNCTION,
            "RecommendationsPerMessage": 3,
            "RecommendationProviderIdType": "PINPOINT_ENDPOINT_ID",
            "Attributes": {
                "Recommendations.Title": "Title",
                "Recommendations.Price": "Price today",
                "Recommendations.Poster_image-url-for-the-large-email-layout": "Poster",
            },
            "RecommendationProviderUri": CAMPAIGN,
            "RecommendationProviderRoleArn": ROLE,
            "Description": "Movies for the weekly email",
        }
        assert botocore_errors(config) == ""
        # The whole request, built and serialized by a real botocore client; no network.
        client = botocore.session.get_session().create_client(
            "pinpoint", region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        with Stubber(client) as stub:
            stub.add_response(
                "create_recommender_configuration",
                {"RecommenderConfigurationResponse": {
                    "CreationDate": "2026-11-22T09:00:00Z", "Id": "abc",
                    "LastModifiedDate": "2026-11-22T09:00:00Z",
                    "RecommendationProviderRoleArn": ROLE,
                    "RecommendationProviderUri": CAMPAIGN}},
                {"CreateRecommenderConfiguration": config},
            )
            answer = client.create_recommender_configuration(
                CreateRecommenderConfiguration=config)
        assert answer["RecommenderConfigurationResponse"]["Id"] == "abc"

    def test_validator_catches_what_pinpoint_refuses(self):
        """The check above can fail: botocore refuses wrong types and missing required keys."""
        assert "RecommendationsPerMessage" in botocore_errors({
            "RecommendationProviderUri": CAMPAIGN, "RecommendationProviderRoleArn": ROLE,
            "RecommendationsPerMessage": "3"})
        assert "RecommendationProviderRoleArn" in botocore_errors({
            "RecommendationProviderUri": CAMPAIGN})


class TestPinpointConfigFlags:
    """Bad flags are refused before AWS sees them; missing required ones are pointed out."""

    async def run(self, database_url: str, capsys, *args: str) -> tuple[int, str, str]:
        parsed = build_parser().parse_args(
            ["pinpoint-config", "--tenant", "acme", "--recommender", "movies.v2", *args])
        conn = await connect(Settings(database_url=database_url))
        try:
            code = await print_pinpoint_config(conn, parsed)
        finally:
            await conn.close()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async def test_without_campaign_and_role_warns(self, recommender, database_url, capsys):
        code, out, err = await self.run(database_url, capsys, "--function-arn", FUNCTION,
                                        "--id-type", "PINPOINT_USER_ID", "--name", "Weekly")
        assert code == 0
        config = json.loads(out)
        assert config["RecommendationProviderIdType"] == "PINPOINT_USER_ID"
        assert config["Name"] == "Weekly"
        assert "--campaign-arn" in err
        assert "--role-arn" in err
        assert "RecommendationProviderUri" in botocore_errors(config)

    @pytest.mark.parametrize(("args", "flag"), [
        (("--function-arn", "not an arn"), "--function-arn"),
        (("--function-arn", FUNCTION, "--campaign-arn", "arn:aws:s3:::bucket"),
         "--campaign-arn"),
        (("--function-arn", FUNCTION, "--role-arn", "role"), "--role-arn"),
        (("--function-arn", FUNCTION, "--name", "has.dot"), "--name"),
        (("--function-arn", FUNCTION, "--description", "d" * 129), "--description"),
        (("--function-arn", FUNCTION, "--display-name", "x" * 26), "--display-name"),
    ])
    async def test_bad_flag_named(self, recommender, database_url, capsys, args, flag):
        code, out, err = await self.run(database_url, capsys, *args)
        assert (code, out) == (2, "")
        assert flag in err

    async def test_unknown_recommender(self, recommender, database_url, capsys):
        parsed = build_parser().parse_args(
            ["pinpoint-config", "--tenant", "acme", "--recommender", "nope",
             "--function-arn", FUNCTION])
        conn = await connect(Settings(database_url=database_url))
        try:
            assert await print_pinpoint_config(conn, parsed) == 1
        finally:
            await conn.close()
        assert "nope" in capsys.readouterr().err
