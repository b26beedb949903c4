"""OpenAPI descriptions of plugin routes: each plugin describes its own, one document shows all.

Admin APIs are spread over plugins (the request store's ``/-/api/requests``, the api_keys
plugin's ``/-/api/keys``…), and no plugin may import another. So a plugin describes each handler
where it defines it, and whatever serves the document walks the pipeline's router::

    from hookgate.openapi import operation

    class Things:
        @operation(summary="List things", query=ThingQuery, response=THING_LIST_SCHEMA, tag="things")
        async def list_things(self, request): ...

        @hookimpl
        def register_routes(self, router):
            router.add_get("/-/api/things", self.list_things)

    # in the plugin serving the document (it kept the router register_routes was given):
    document = openapi_document(router, title="hookgate admin API", prefix="/-/api/")

Query and body models are pydantic models (their JSON schemas, with descriptions and bounds, are
the documentation); responses are a pydantic model or a JSON schema. Path parameters are taken
from the route (``/-/api/keys/{key_id}``). Every operation is documented with the gateway's error
shape and the admin security schemes (a bearer admin key, or the dashboard's session cookie).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

__all__ = ["operation", "openapi_document", "ERROR_SCHEMA"]

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__hookgate_openapi__"
_PATH_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")

ERROR_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""Every failure's body: OpenAI's error shape."""

_ERRORS = {
    "400": "invalid parameters (the error's param names the first one)",
    "401": "no admin key or session, or a wrong one",
    "403": "the key is not an admin key, or a session request without its CSRF token",
    "503": "a backing store (database, Redis) cannot be reached",
}


def operation(
    *,
    summary: str,
    description: str = "",
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | Mapping[str, Any] | None = None,
    status: int = 200,
    tag: str | None = None,
    errors: Mapping[int, str] | None = None,
) -> Callable[[F], F]:
    """Describe a route handler for :func:`openapi_document`.

    :param query: the model the handler validates its query string with (one parameter per field).
    :param body: the model of its JSON request body.
    :param response: the model or JSON schema of its answer with ``status``.
    :param errors: further error statuses and what they mean (404, 409…).
    """

    def describe(handler: F) -> F:
        setattr(handler, _ATTRIBUTE, {
            "summary": summary, "description": description, "query": query, "body": body,
            "response": response, "status": status, "tag": tag, "errors": dict(errors or {}),
        })
        return handler

    return describe


def openapi_document(router: web.UrlDispatcher, *, title: str, version: str = "1", prefix: str = "/") -> dict[str, Any]:
    """An OpenAPI 3.1 document of every described handler on ``router`` under ``prefix``."""
    components: dict[str, Any] = {"Error": dict(ERROR_SCHEMA)}
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes():
        spec = getattr(route.handler, _ATTRIBUTE, None)
        path = route.resource.canonical if route.resource is not None else ""
        if spec is None or not path.startswith(prefix) or route.method == "HEAD":
            continue
        paths.setdefault(_PATH_PARAMETER.sub(r"{\1}", path), {})[route.method.lower()] = _operation(spec, path, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "an admin gateway key"},
                "session": {
                    "type": "apiKey", "in": "cookie", "name": "hookgate_session",
                    "description": "the dashboard's session; requests also send its CSRF token as X-CSRF-Token",
                },
            },
        },
        "security": [{"adminKey": []}, {"session": []}],
    }


def _operation(spec: Mapping[str, Any], path: str, components: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _PATH_PARAMETER.findall(path)
    ]
    if spec["query"] is not None:
        schema = _schema(spec["query"], components, inline=True)
        required = set(schema.get("required", ()))
        for name, field in schema.get("properties", {}).items():
            parameter = {"name": name, "in": "query", "required": name in required, "schema": field}
            if "description" in field:
                parameter["description"] = field["description"]
            parameters.append(parameter)
    answer: dict[str, Any] = {"description": "success"}
    if spec["response"] is not None:
        answer["content"] = {"application/json": {"schema": _schema(spec["response"], components)}}
    responses: dict[str, Any] = {str(spec["status"]): answer}
    for status, meaning in {**_ERRORS, **{str(k): v for k, v in spec["errors"].items()}}.items():
        responses[status] = {"description": meaning, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    described: dict[str, Any] = {"summary": spec["summary"], "parameters": parameters, "responses": dict(sorted(responses.items()))}
    if spec["description"]:
        described["description"] = spec["description"]
    if spec["tag"]:
        described["tags"] = [spec["tag"]]
    if spec["body"] is not None:
        described["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(spec["body"], components)}}}
    return described


def _schema(source: type[BaseModel] | Mapping[str, Any], components: dict[str, Any], *, inline: bool = False) -> dict[str, Any]:
    """A JSON schema whose nested models live in ``components`` (a model itself too, unless
    ``inline``: query models are spread into parameters)."""
    if not (isinstance(source, type) and issubclass(source, BaseModel)):
        return dict(source)
    schema = source.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        components.setdefault(name, nested)
    if inline:
        return schema
    components.setdefault(source.__name__, schema)
    return {"$ref": f"#/components/schemas/{source.__name__}"}
