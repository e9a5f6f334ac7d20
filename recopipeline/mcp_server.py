"""The MCP server: the tutorial's `get_product_recommendations` tool, and `record_feedback`, over stdio or HTTP.

Over streamable HTTP every request must carry `Authorization: Bearer $RECOPIPELINE_MCP_TOKEN` (the tutorial's
"authenticated" policy); requests without it get 401. Over stdio the server is a child process of its client
and trusts it.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, WithJsonSchema
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from recopipeline.lib.contract import PLACEMENTS
from recopipeline.serving import Recommender, default_recommender
from recopipeline.serving.feedback import record_feedback as record_feedback_in
from recopipeline.serving.feedback import record_impressions
from recopipeline.serving.read import MAX_CART, MAX_LIMIT, RECOMMENDATION_TYPES
from recopipeline.serving.schema import FEEDBACK_EVENTS

MIN_TOKEN_LENGTH = 16
TOOL_DESCRIPTION = (
    "Retrieves personalized product recommendations for a customer based on their browsing history, purchase "
    "history, and product similarity. Use when customers are browsing products, viewing product pages, or have "
    "items in their cart."
)
FEEDBACK_DESCRIPTION = (
    "Records that a recommended product was shown to a customer (impression), clicked (click) or bought "
    "(purchase, with its revenue), so click-through rates, conversion and revenue can be compared per placement, "
    "A/B variant and recommendation type. Pass the recommendation_id, placement, variant, recommendation_type and "
    "rank from the get_product_recommendations answer when known."
)


class ConfigurationError(RuntimeError):
    """The server cannot start as configured."""


TRENDING_DESCRIPTION = (
    "The shop's trending products: available products whose interest in the last 24 hours grows most beyond "
    "their daily mean of the week before, refreshed hourly. Each has a rank, product_id, product_name, score "
    "(1 = the strongest growth) and evidence (the growth factor)."
)


def build_server(recommender: Recommender | None = None, impressions: bool = True) -> MCPServer:
    """The MCP server over a recommender (default: the configured serving database).

    With `impressions`, every answer of get_product_recommendations is recorded as impressions.
    """
    recommender = recommender or default_recommender()
    server = MCPServer(
        "recopipeline",
        instructions="Personalised product recommendations from the recopipeline serving database.",
    )

    @server.tool(name="get_product_recommendations", description=TOOL_DESCRIPTION)
    def get_product_recommendations(
        customer_id: Annotated[str, Field(description="Customer ID to generate recommendations for")],
        product_id: Annotated[
            str | None,
            WithJsonSchema(
                {
                    "type": "string",
                    "description": "Optional: Current product being viewed (for complementary recommendations)",
                }
            ),
        ] = None,
        limit: Annotated[
            int, Field(ge=1, le=MAX_LIMIT, description="Maximum number of recommendations to return")
        ] = 10,
        recommendation_type: Annotated[
            Literal[RECOMMENDATION_TYPES],  # type: ignore[valid-type]
            Field(description="Filter by recommendation type. Defaults to 'all'."),
        ] = "all",
        cart_product_ids: Annotated[
            list[str] | None,
            WithJsonSchema({
                "type": "array", "items": {"type": "string"}, "maxItems": MAX_CART,
                "description": "Optional: the products in the customer's cart (what goes with them is blended in; "
                "they are left out)",
            }),
        ] = None,
        placement: Annotated[
            Literal[PLACEMENTS] | None,  # type: ignore[valid-type]
            WithJsonSchema({
                "type": "string", "enum": list(PLACEMENTS),
                "description": "Optional: where the list is shown. home (the customer's own), product_page (needs "
                "product_id), cart (needs cart_product_ids), recently_viewed, buy_it_again or trending. Default: "
                "cart with a cart, product_page with a product, else home.",
            }),
        ] = None,
    ) -> dict[str, Any]:
        try:
            answer = recommender.recommend(
                customer_id, product_id, limit, recommendation_type, cart_product_ids, placement
            )
        except ValueError as error:  # the caller's mistake: say which
            raise ToolError(str(error)) from None
        if impressions:
            record_impressions(recommender.db, answer)
        return answer

    @server.tool(name="get_trending_products", description=TRENDING_DESCRIPTION)
    def get_trending_products(
        customer_id: Annotated[
            str | None,
            WithJsonSchema({"type": "string", "description": "Optional: the customer, for their A/B variant's list"}),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Maximum number of products to return")] = 10,
    ) -> dict[str, Any]:
        if customer_id is None:  # nobody to attribute it to: the list alone
            return {"customer_id": None, "trending": recommender.trending(None, limit)}
        try:
            answer = recommender.recommend(customer_id, limit=limit, placement="trending")
        except ValueError as error:
            raise ToolError(str(error)) from None
        if impressions:
            record_impressions(recommender.db, answer)
        fields = ("rank", "product_id", "product_name", "score", "evidence")
        return {
            "customer_id": customer_id, "recommendation_id": answer["recommendation_id"], "placement": "trending",
            "variant": answer["variant"], "version": answer["version"],
            "trending": [{name: item[name] for name in fields} for item in answer["recommendations"]],
        }

    @server.tool(name="record_feedback", description=FEEDBACK_DESCRIPTION)
    def record_feedback(
        customer_id: Annotated[str, Field(description="Customer who saw, clicked or bought the recommendation")],
        product_id: Annotated[str, Field(description="The recommended product")],
        event: Annotated[
            Literal[FEEDBACK_EVENTS], Field(description="What happened")  # type: ignore[valid-type]
        ] = "click",
        recommendation_type: Annotated[str | None, Field(description="Type from the answer")] = None,
        variant: Annotated[str | None, Field(description="A/B variant from the answer")] = None,
        rank: Annotated[int | None, Field(ge=1, description="Position in the answer")] = None,
        recommendation_id: Annotated[str | None, Field(description="recommendation_id of the answer")] = None,
        revenue: Annotated[float | None, Field(ge=0, description="What the purchase was worth (purchase only)")] = None,
        placement: Annotated[str | None, Field(description="placement of the answer")] = None,
    ) -> dict[str, Any]:
        try:
            row = record_feedback_in(
                recommender.db, customer_id, product_id, event, recommendation_type=recommendation_type,
                variant=variant, rank=rank, recommendation_id=recommendation_id, revenue=revenue, placement=placement,
            )
        except ValueError as error:  # the caller's mistake: say which (a crash's text stays on the server)
            raise ToolError(str(error)) from None
        return {**row, "recorded_at": row["recorded_at"].isoformat()}

    return server


class BearerTokenMiddleware:
    """Refuses every HTTP request whose `Authorization` header is not `Bearer <token>` (401)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = JSONResponse(
                {"error": "unauthorized", "error_description": "send Authorization: Bearer <RECOPIPELINE_MCP_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="recopipeline"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token)


def http_app(server: MCPServer, token: str | None, host: str = "127.0.0.1") -> ASGIApp:
    """The streamable-HTTP app at /mcp behind the bearer-token check."""
    return BearerTokenMiddleware(server.streamable_http_app(host=host), check_token(token))


def check_token(token: str | None) -> str:
    if not token:
        raise ConfigurationError("set RECOPIPELINE_MCP_TOKEN: the MCP server refuses to serve HTTP without a token")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(f"RECOPIPELINE_MCP_TOKEN is too short: use at least {MIN_TOKEN_LENGTH} characters")
    return token


def serve(transport: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          impressions: bool = True) -> None:
    """Run the server until it is stopped."""
    if transport == "stdio":
        build_server(impressions=impressions).run("stdio")
    elif transport == "http":
        check_token(token)
        app = http_app(build_server(impressions=impressions), token, host)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        raise ConfigurationError(f"unknown transport {transport!r}: use stdio or http")
