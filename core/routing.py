"""Routes: which provider answers a public model name, as which upstream model.

Providers declare the models they serve (``Provider.models()``); each becomes a route to itself
under the same name. The ``[models]`` section of plugins.toml adds or overrides routes: a public
name (and its aliases) to a provider, an upstream model name and default parameters, with
fallbacks; and pattern routes, ``[models."groq/*"]``, which pass the rest of the name through.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from .config import ModelRouteConfig
    from .context import RequestContext
    from .provider import Provider

__all__ = ["Route", "RoutingTable", "RoutingError", "upstream_body"]


@dataclass(frozen=True, slots=True)
class Route:
    """One way to answer a public model name.

    ``upstream_model`` is the name the provider is asked for; ``params`` are default request
    parameters (a client's own values win); ``fallbacks`` are further public model names tried in
    order when this route fails with a retriable error before the first byte reached the client.
    """

    model: str
    provider: Provider
    upstream_model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()


class RoutingError(Exception):
    """The ``[models]`` section cannot be resolved against the enabled providers."""

    def __init__(self, section: str, key: str, reason: str) -> None:
        super().__init__(f"[{section}] {key}: {reason}")
        self.section, self.key, self.reason = section, key, reason


def upstream_body(ctx: RequestContext) -> dict[str, Any]:
    """The request body as the routed provider should receive it: the route's default parameters
    under the client's own, and the upstream model name."""
    route = ctx.route
    if route is None:
        return ctx.body
    if route.params:
        return {**route.params, **ctx.body, "model": route.upstream_model}
    if route.upstream_model == ctx.body.get("model"):
        return ctx.body
    return {**ctx.body, "model": route.upstream_model}


class RoutingTable:
    """Public model names to routes, built once per pipeline."""

    def __init__(self, providers: Mapping[str, Provider], configured: Mapping[str, ModelRouteConfig]) -> None:
        self._exact: dict[str, Route] = {}
        self._patterns: list[tuple[str, Route]] = []  # (prefix, template route)
        implicit: dict[str, Provider] = {}
        for provider in providers.values():
            for model in provider.models():
                other = implicit.get(model)
                if other is not None and other is not provider and model not in configured:
                    raise RoutingError(
                        f"models.{model}", "provider",
                        f"model {model!r} is served by both {other.name!r} and {provider.name!r}; choose one with a [models.\"{model}\"] table",
                    )
                implicit.setdefault(model, provider)
        for model, provider in implicit.items():
            self._exact[model] = Route(model, provider, model)
        for name, spec in configured.items():
            section = f"models.{name}"
            provider = providers.get(spec.provider)
            if provider is None:
                raise RoutingError(section, "provider", f"no enabled provider is named {spec.provider!r}; enabled: {', '.join(sorted(providers)) or 'none'}")
            if name.endswith("/*"):
                if spec.model is not None or spec.aliases:
                    raise RoutingError(section, "model", "a pattern route passes the rest of the name through; it takes no model or aliases")
                self._patterns.append((name[:-1], Route(name, provider, "", dict(spec.params), tuple(spec.fallbacks))))
                continue
            route = Route(name, provider, spec.model or name, dict(spec.params), tuple(spec.fallbacks))
            for public in (name, *spec.aliases):
                if public in configured and public != name:
                    raise RoutingError(section, "aliases", f"{public!r} is also configured as a model of its own")
                self._exact[public] = route
        self._patterns.sort(key=lambda item: len(item[0]), reverse=True)  # the most specific prefix wins
        for name, spec in configured.items():
            for fallback in spec.fallbacks:
                if self.resolve(fallback) is None:
                    raise RoutingError(f"models.{name}", "fallbacks", f"{fallback!r} is not a routable model")

    def resolve(self, model: str) -> Route | None:
        """The route for a public model name, or None."""
        route = self._exact.get(model)
        if route is not None:
            return route
        for prefix, template in self._patterns:
            if model.startswith(prefix) and len(model) > len(prefix):
                return Route(model, template.provider, model[len(prefix):], template.params, template.fallbacks)
        return None

    def with_fallbacks(self, route: Route) -> list[Route]:
        """The route, then its fallbacks' routes (each once), in order."""
        chain = [route]
        seen = {route.model}
        for name in route.fallbacks:
            fallback = self.resolve(name)
            if fallback is not None and fallback.model not in seen:
                seen.add(fallback.model)
                chain.append(fallback)
        return chain

    def listed(self) -> Iterable[tuple[str, str]]:
        """(public model name, provider name) for every routable name; a pattern route lists its
        prefix joined to each model its provider declares."""
        for model, route in self._exact.items():
            yield model, route.provider.name
        for prefix, template in self._patterns:
            for model in template.provider.models():
                if f"{prefix}{model}" not in self._exact:
                    yield f"{prefix}{model}", template.provider.name
