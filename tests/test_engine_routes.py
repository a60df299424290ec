"""The inference port's one route table (`http/routes.py`): which requests the fast path
answers and which it leaves to Tornado. No process: fast tier."""

from __future__ import annotations

from jupyter_torchserve.engine.http.http1 import Request
from jupyter_torchserve.engine.http.routes import INFERENCE, Route, make_router


def _request(method: str, target: str, ctype: str = "") -> Request:
    req = Request()
    req.method, req.target = method, target
    if ctype:
        req.headers["content-type"] = ctype
    return req


def test_the_router_sends_a_fast_routes_requests_to_it_with_decoded_arguments():
    seen: list[tuple] = []

    def answer(registry, conn, req, *args) -> bool:
        seen.append((req.method, *args))
        return True

    routes = (
        Route(r"/items/([^/]+)(?:/([^/]+))?", object, fast=answer, fast_methods=("POST", "PUT")),  # type: ignore[arg-type]
        Route(r"/only-post/([^/]+)", object, fast=answer),  # type: ignore[arg-type]
        Route(r"/slow", object),  # type: ignore[arg-type]
    )
    route = make_router("registry", routes)  # type: ignore[arg-type]
    assert route(None, _request("PUT", "/items/a%20b?x=1"))  # type: ignore[arg-type]
    assert route(None, _request("POST", "/items/a/2"))  # type: ignore[arg-type]
    assert seen == [("PUT", "a b", None), ("POST", "a", "2")]
    # everything else is Tornado's: other methods, other routes, undecodable arguments
    assert not route(None, _request("GET", "/items/a"))  # type: ignore[arg-type]
    assert not route(None, _request("PUT", "/only-post/a"))  # its 405
    assert not route(None, _request("POST", "/slow"))  # type: ignore[arg-type]
    assert not route(None, _request("POST", "/items/%ff"))  # type: ignore[arg-type]
    assert not route(None, _request("POST", "/items"))  # type: ignore[arg-type]
    assert len(seen) == 2


def test_the_inference_tables_fast_routes_are_the_hot_ones():
    """The routes that skip Tornado: TorchServe's predictions and explanations (POST and
    PUT), KServe's v1 verbs (POST, and PUT: `curl -T` of a raw body) and v2 infer/explain
    (POST); form bodies on /predictions are declined, so the Tornado handler parses them."""
    fast = {r.pattern: r.fast_methods for r in INFERENCE if r.fast is not None}
    assert list(fast.values()) == [("POST", "PUT"), ("POST", "PUT"), ("POST", "PUT"), ("POST",)]
    assert [p.split("/")[1] for p in fast] == ["predictions", "explanations", "v1", "v2"]
    route = make_router(None)  # type: ignore[arg-type]
    form = _request("POST", "/predictions/m", "application/x-www-form-urlencoded; charset=x")
    assert not route(None, form)  # type: ignore[arg-type]
    multipart = _request("PUT", "/predictions/m/1.0", "multipart/form-data; boundary=b")
    assert not route(None, multipart)  # type: ignore[arg-type]


def test_like_tornado_the_first_route_that_matches_decides():
    """A path that an earlier route of the table matches is that route's, even when a later
    fast route would match it too: the router and Tornado never disagree about a path."""
    answered: list[str] = []

    def answer(registry, conn, req, *args) -> bool:
        answered.append(req.target)
        return True

    routes = (
        Route(r"/items/special", object),  # type: ignore[arg-type]
        Route(r"/items/([^/]+)", object, fast=answer),  # type: ignore[arg-type]
        Route(r"/v2/?", object),  # type: ignore[arg-type]
        Route(r"/v2(/x)?", object, fast=answer),  # type: ignore[arg-type]
    )
    route = make_router(None, routes)  # type: ignore[arg-type]
    assert not route(None, _request("POST", "/items/special"))  # type: ignore[arg-type]
    assert route(None, _request("POST", "/items/other"))  # type: ignore[arg-type]
    assert not route(None, _request("POST", "/v2"))  # /v2/? matches "/v2" first
    assert route(None, _request("POST", "/v2/x"))  # type: ignore[arg-type]
    assert answered == ["/items/other", "/v2/x"]


def test_a_patterns_literal_prefix_is_one_every_match_has():
    from jupyter_torchserve.engine.http.routes import _literal_prefix

    assert _literal_prefix(r"/predictions/([^/]+)(?:/([^/]+))?(/.*)?") == "/predictions/"
    assert _literal_prefix(r"/v2/?") == "/v2"  # the slash is optional
    assert _literal_prefix(r"/ab+c") == "/ab"
    assert _literal_prefix(r"/a(b|c)") == "/a"
    assert _literal_prefix(r"/x|/y") == ""  # either branch: no common start
    assert _literal_prefix(r"/a\(x|y") == ""
