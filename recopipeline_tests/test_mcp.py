"""The MCP server, driven by the official SDK's client over stdio and over streamable HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import func, select

from recopipeline.lib.tuning import STRATEGIES
from recopipeline.mcp_server import build_server
from recopipeline.serving import Recommender
from recopipeline.serving.schema import recommendation_feedback
from recopipeline_tests.serving_support import publish_generation, sqlite_database

REPOSITORY = Path(__file__).parents[1]
TOKEN = "test-token-0123456789abcdef"
TUTORIAL_SCHEMA = {  # the tutorial's input schema of the tool (our enum adds the other strategies)
    "customer_id": {"type": "string"},
    "product_id": {"type": "string"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
    "recommendation_type": {"type": "string", "default": "all"},
}


@pytest.fixture(scope="module")
def serving_url(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("mcp")
    db = sqlite_database(folder)
    publish_generation(db, "one")
    db.dispose()
    return f"sqlite:///{folder / 'serving.db'}"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "recopipeline.cli", "mcp", *args]


def feedback_rows(url: str) -> int:
    db = sqlite_database(Path(url.removeprefix("sqlite:///")).parent)
    with db.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(recommendation_feedback)).scalar()
    db.dispose()
    return count


async def exercise(client: Client) -> int:
    """What every transport must do: the tutorial's schema, answers, errors and feedback; returns the number of
    feedback rows it caused (each answered recommendation is an impression, plus one click)."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"get_product_recommendations", "get_trending_products", "record_feedback"}
    schema = tools["get_product_recommendations"].input_schema
    assert schema["required"] == ["customer_id"]
    for name, expected in TUTORIAL_SCHEMA.items():
        assert expected.items() <= schema["properties"][name].items()
    tutorial_types = {"all", "affinity_similar", "collaborative", "complementary", "category_preference"}
    assert tutorial_types <= set(schema["properties"]["recommendation_type"]["enum"])

    carting = await client.call_tool(
        "get_product_recommendations", {"customer_id": "C00001", "limit": 50, "cart_product_ids": ["P0010"]}
    )
    assert not carting.is_error and carting.structured_content["cart"] == ["P0010"]
    in_cart = [r for r in carting.structured_content["recommendations"] if r["product_id"] == "P0010"]
    assert in_cart == [] and any("cart:P0010" in (r["evidence"] or "")
                                 for r in carting.structured_content["recommendations"])

    trending = await client.call_tool("get_trending_products", {"limit": 2})
    assert not trending.is_error
    assert [(r["rank"], r["product_id"]) for r in trending.structured_content["trending"]] == [(1, "P8001"), (2, "P8002")]
    personal = (await client.call_tool("get_trending_products", {"customer_id": "C00001", "limit": 2})).structured_content
    assert personal["placement"] == "trending" and personal["recommendation_id"]  # its clicks can name the answer
    assert [r["product_id"] for r in personal["trending"]] == ["P8001", "P8002"]

    result = await client.call_tool("get_product_recommendations", {"customer_id": "C00001", "limit": 3})
    assert not result.is_error
    answer = result.structured_content
    assert answer["cold_start"] is False and [r["rank"] for r in answer["recommendations"]] == [1, 2, 3]
    assert json.loads(result.content[0].text) == answer

    viewing = await client.call_tool(
        "get_product_recommendations",
        {"customer_id": "C00001", "product_id": "P0010", "limit": 50, "recommendation_type": "complementary"},
    )
    assert {r["product_id"] for r in viewing.structured_content["recommendations"]} >= {"P0021", "P0032"}

    newcomer = await client.call_tool("get_product_recommendations", {"customer_id": "x' OR '1'='1"})
    assert newcomer.structured_content["cold_start"] is True

    for bad in ({"customer_id": "C00001", "limit": 0}, {"customer_id": "C00001", "recommendation_type": "best"},
                {"limit": 5}):
        refused = await client.call_tool("get_product_recommendations", bad)
        assert refused.is_error

    clicked = await client.call_tool(
        "record_feedback", {"customer_id": "C00001", "product_id": answer["recommendations"][0]["product_id"]}
    )
    assert clicked.structured_content["event"] == "click"
    assert clicked.structured_content["variant"] == "control"
    answers = (answer, viewing.structured_content, newcomer.structured_content, carting.structured_content)
    return sum(len(a["recommendations"]) for a in answers) + len(personal["trending"]) + 1  # + the click


def test_stdio_session_calls_the_tool(serving_url):
    before = feedback_rows(serving_url)

    async def main() -> int:
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "recopipeline.cli", "mcp", "--transport", "stdio"],
            env={"RECOPIPELINE_SERVING_URL": serving_url},
            cwd=str(REPOSITORY),
        )
        async with Client(server) as client:
            return await exercise(client)

    caused = anyio.run(main)
    assert caused > 10 and feedback_rows(serving_url) == before + caused


def test_every_strategy_of_the_blend_is_a_recommendation_type(serving_url):
    db = sqlite_database(Path(serving_url.removeprefix("sqlite:///")).parent)

    async def main() -> None:
        async with Client(build_server(Recommender(db, cache_ttl=0), impressions=False)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            schema = tools["get_product_recommendations"].input_schema["properties"]["recommendation_type"]
            assert schema["enum"][: len(STRATEGIES) + 1] == ["all", *STRATEGIES]
            assert {"trending", "pinned", "recently_viewed"} <= set(schema["enum"])
            for strategy in STRATEGIES:
                result = await client.call_tool(
                    "get_product_recommendations", {"customer_id": "C00001", "recommendation_type": strategy}
                )
                assert not result.is_error, strategy
                assert {r["recommendation_type"] for r in result.structured_content["recommendations"]} <= {strategy}

    try:
        anyio.run(main)
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def http_server(serving_url):
    port = free_port()
    env = {**os.environ, "RECOPIPELINE_SERVING_URL": serving_url, "RECOPIPELINE_MCP_TOKEN": TOKEN}
    process = subprocess.Popen(command("--transport", "http", "--port", str(port)), cwd=REPOSITORY, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert process.poll() is None, "the MCP server exited"
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the MCP server did not start listening")
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(timeout=10)


def test_http_session_with_the_token_calls_the_tool(http_server):
    async def main() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(http_server, http_client=http)) as client:
                await exercise(client)

    anyio.run(main)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_http_without_the_token_is_refused(http_server, authorization):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "get_product_recommendations", "arguments": {"customer_id": "C00001"}}}
    response = httpx2.post(http_server, json=request, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "recommendations" not in response.text


def test_the_sdk_client_without_the_token_cannot_connect(http_server):
    statuses: list[int] = []

    async def remember(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def main() -> None:
        async with httpx2.AsyncClient(timeout=30, event_hooks={"response": [remember]}) as http:
            async with Client(streamable_http_client(http_server, http_client=http)) as client:
                await client.list_tools()

    with pytest.raises(BaseExceptionGroup) as raised:
        anyio.run(main)
    assert raised.group_contains(MCPError)
    assert statuses and set(statuses) == {401}


def test_http_refuses_to_start_without_a_token(serving_url):
    env = {k: v for k, v in os.environ.items() if k != "RECOPIPELINE_MCP_TOKEN"}
    env["RECOPIPELINE_SERVING_URL"] = serving_url
    finished = subprocess.run(command("--transport", "http", "--port", str(free_port())), cwd=REPOSITORY, env=env,
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert finished.stderr.strip() == (
        "recopipeline: error: set RECOPIPELINE_MCP_TOKEN: the MCP server refuses to serve HTTP without a token"
    )
