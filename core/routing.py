"""Routes: which provider answers a public model name, as which upstream model.

Providers declare the models they serve (``Provider.models()``); each becomes a route to itself
under the same name. The ``[models]`` section of plugins.toml adds or overrides routes: a public
name (and its aliases) to a provider, an upstream model name and default parameters, with
fallbacks; and pattern routes, ``[models."groq/*"]``, which pass the rest of the name through.

A route may instead list several ``deployments`` (docs/load_balancing.md): it then has a
:class:`~hookgate.balancing.Balancer`, and one *member* route per deployment (its provider and
upstream model). The core picks a member for each upstream attempt; ``ctx.route`` is that member
while the attempt runs and once it answered, and the balanced route otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .balancing import Balancer, BalancingState, Deployment, deployments_from_config
from .provider import kinds_of

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

    A load-balanced route has a ``balancer`` and its ``members`` (one route per deployment, by
    deployment name); its own ``provider`` and ``upstream_model`` are its first deployment's. A
    member has its ``deployment`` and its ``parent``, the balanced route.
    """

    model: str
    provider: Provider
    upstream_model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
    balancer: Balancer | None = field(default=None, repr=False, compare=False)
    members: Mapping[str, Route] = field(default_factory=dict, repr=False, compare=False)
    deployment: Deployment | None = field(default=None, compare=False)
    parent: Route | None = field(default=None, repr=False, compare=False)

    @property
    def balanced(self) -> Route | None:
        """The load-balanced route this route belongs to (itself, or its parent), or None."""
        if self.balancer is not None:
            return self
        return self.parent

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of request the route answers: its provider's, or any of its deployments'."""
        if not self.members:
            return kinds_of(self.provider)
        return frozenset().union(*(kinds_of(member.provider) for member in self.members.values()))


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

    def __init__(
        self, providers: Mapping[str, Provider], configured: Mapping[str, ModelRouteConfig], *, balancing_state: BalancingState | None = None
    ) -> None:
        self._exact: dict[str, Route] = {}
        self.balanced: list[Route] = []
        """The load-balanced routes, in configuration order."""
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
            if spec.deployments:
                if name.endswith("/*"):
                    raise RoutingError(section, "deployments", "a pattern route cannot be load-balanced; give each model its own table")
                route = self._balanced_route(name, spec, providers, balancing_state)
                self.balanced.append(route)
                for public in (name, *spec.aliases):
                    if public in configured and public != name:
                        raise RoutingError(section, "aliases", f"{public!r} is also configured as a model of its own")
                    self._exact[public] = route
                continue
            provider = providers.get(spec.provider or "")
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

    @staticmethod
    def _balanced_route(
        name: str, spec: ModelRouteConfig, providers: Mapping[str, Provider], state: BalancingState | None
    ) -> Route:
        section = f"models.{name}"
        deployments = deployments_from_config(name, spec, spec.model or name)
        served: dict[str, Provider] = {}
        for index, deployment in enumerate(deployments):
            provider = providers.get(deployment.provider)
            if provider is None:
                raise RoutingError(
                    section, f"deployments[{index}].provider",
                    f"no enabled provider is named {deployment.provider!r}; enabled: {', '.join(sorted(providers)) or 'none'}",
                )
            if deployment.base_url is not None or deployment.api_key_env is not None:
                variant = getattr(provider, "with_endpoint", None)
                if not callable(variant):
                    raise RoutingError(
                        section, f"deployments[{index}]",
                        f"the provider {provider.name!r} cannot take its own base_url or api_key_env; define another provider instead",
                    )
                provider = variant(base_url=deployment.base_url, api_key_env=deployment.api_key_env)
            served[deployment.name] = provider
        balancer = Balancer(name, deployments, strategy=spec.strategy, state=state, latency=spec.latency)
        first = deployments[0]
        route = Route(name, served[first.name], first.upstream_model, dict(spec.params), tuple(spec.fallbacks), balancer=balancer)
        members = {
            d.name: Route(name, served[d.name], d.upstream_model, route.params, route.fallbacks, deployment=d, parent=route)
            for d in deployments
        }
        object.__setattr__(route, "members", members)
        return route

    def endpoint_variants(self) -> list[Provider]:
        """Providers made for deployments with their own base URL or key (the core starts and
        closes them with the pipeline)."""
        found: dict[int, Provider] = {}
        for route in self.balanced:
            for member in route.members.values():
                d = member.deployment
                if d is not None and (d.base_url is not None or d.api_key_env is not None):
                    found[id(member.provider)] = member.provider
        return list(found.values())

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
