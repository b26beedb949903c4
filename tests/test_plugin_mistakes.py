"""A plugin author's mistakes stop start-up with one line naming the plugin and what to change:
hooks without @hookimpl, a class that cannot take its config, hooks annotated to return what the
core cannot use, register() given the wrong thing, and entry points that do not resolve. What no
annotation says is caught at run time: a 500 whose log names the plugin."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conftest import completion
from hookgate import Completion, PluginConfig, hookimpl
from hookgate.config import ConfigError
from hookgate.gateway import Gateway
from hookgate.registry import PluginLoadError, installed_plugins
from hookgate.runner import PipelineError
from servers import HOOKGATE

GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def start(make_config, plugin: object, name: str = "p") -> Gateway:
    return Gateway(make_config(f'[gateway]\npipeline = ["{name}", "echo"]', local={name: plugin}))


def refused(make_config, plugin: object, *, error: type[Exception] = PipelineError) -> str:
    with pytest.raises(error) as caught:
        start(make_config, plugin)
    message = str(caught.value)
    assert message.startswith("plugin 'p'") and "\n" not in message, message
    return message


# ------------------------------------------------------------------------ unmarked hooks ---


def test_hooks_without_hookimpl_are_refused_instead_of_never_running(make_config):
    class Forgetful:
        def __init__(self, config: PluginConfig) -> None:
            pass

        async def before_request(self, ctx):
            raise AssertionError("never called")

        async def after_response(self, ctx, response):
            pass

    assert refused(make_config, Forgetful).endswith(
        "after_response, before_request look like hooks but none is marked @hookimpl, so none would ever run: "
        "decorate them with @hookimpl (from hookgate import hookimpl)"
    )


def test_one_forgotten_hookimpl_among_marked_ones_is_refused(make_config):
    class HalfDone:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def before_request(self, ctx):
            pass

        def request_finished(self, ctx, outcome):
            pass

    assert "request_finished is not marked @hookimpl (before_request is), so it would never run" in refused(make_config, HalfDone)


def test_a_module_of_unmarked_hook_functions_is_refused(make_config):
    module = types.ModuleType("hookgate_forgetful")
    exec("async def before_request(ctx):\n    pass\n", module.__dict__)
    assert "before_request looks like a hook but is not marked @hookimpl" in refused(make_config, module)


def test_a_hook_marked_for_another_project_says_so(make_config):
    import pluggy

    other = pluggy.HookimplMarker("datasette")

    class Borrowed:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @other
        async def before_request(self, ctx):
            pass

    assert "before_request is marked for 'datasette', not hookgate" in refused(make_config, Borrowed)


def test_helper_methods_with_other_names_are_fine(make_config):
    class Helpers:
        def __init__(self, config: PluginConfig) -> None:
            pass

        def before(self):  # not a hook name
            pass

        @hookimpl
        async def before_request(self, ctx):
            pass

    start(make_config, Helpers)


def test_every_installed_plugin_passes_the_checks(make_config):
    """No false alarm: every built-in plugin (and the example package) is accepted as it is."""
    from hookgate.plugin_checks import constructor_problems, unmarked_hook_problems

    for name, plugin in installed_plugins().items():
        target = plugin.load()
        assert unmarked_hook_problems(target) == [], name
        if isinstance(target, type):
            assert constructor_problems(target, plugin.config_model()) == [], name


# --------------------------------------------------------------------------- the config ---


class GuardConfig(PluginConfig):
    words: list[str] = []


def test_a_class_without_a_config_parameter_is_refused_with_the_fix(make_config):
    class NoInit:
        @hookimpl
        async def before_request(self, ctx):
            pass

    assert refused(make_config, NoInit, error=PluginLoadError).endswith(
        "NoInit.__init__ takes no config: write `def __init__(self, config: NoInitConfig)` "
        "(the gateway calls NoInit(config) with the validated [plugins.p] table)"
    )

    class OnlySelf:
        Config = GuardConfig

        def __init__(self) -> None:
            pass

    assert "OnlySelf.__init__ takes no config: write `def __init__(self, config: GuardConfig)`" in refused(
        make_config, OnlySelf, error=PluginLoadError
    )


def test_a_required_parameter_besides_config_is_refused(make_config):
    class Greedy:
        def __init__(self, config: PluginConfig, client) -> None:
            pass

    assert "Greedy.__init__ requires client besides config, and the gateway passes only config" in refused(
        make_config, Greedy, error=PluginLoadError
    )

    class Optional:
        def __init__(self, config: PluginConfig, client=None, *, clock=None) -> None:
            pass

    start(make_config, Optional)


def test_a_config_annotation_without_config_attribute_is_refused(make_config):
    class Unpointed:
        def __init__(self, config: GuardConfig) -> None:
            self.words = config.words

    assert refused(make_config, Unpointed, error=PluginLoadError).endswith(
        "Unpointed.__init__ takes config: GuardConfig, but the class declares no `Config = GuardConfig`, so "
        "[plugins.p] would be validated against the bare PluginConfig: add `Config = GuardConfig` to the class"
    )


def test_a_config_attribute_that_disagrees_with_init_is_refused(make_config):
    class OtherConfig(PluginConfig):
        pass

    class Mismatched:
        Config = OtherConfig

        def __init__(self, config: GuardConfig) -> None:
            pass

    assert "takes config: GuardConfig, but it is given a OtherConfig (its Config): make them agree" in refused(
        make_config, Mismatched, error=PluginLoadError
    )


def test_an_init_that_raises_says_whose_in_one_line(make_config):
    class Exploding:
        def __init__(self, config: PluginConfig) -> None:
            raise ValueError("bad\nthing")

    assert refused(make_config, Exploding, error=PluginLoadError).endswith("Exploding(config) raised ValueError: bad thing")


# ------------------------------------------------------------------------- return types ---


def test_an_authenticate_annotated_to_return_a_string_is_refused(make_config):
    class StringAuth:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def authenticate(self, credential) -> str:
            return "team-a"

    assert refused(make_config, StringAuth) == (
        "plugin 'p': authenticate is annotated to return str, but the core takes ClientKey | None: "
        "return a hookgate.ClientKey, or None to let the next plugin decide; raise AuthenticationFailed to refuse"
    )


def test_a_cache_annotated_to_return_a_dict_is_told_to_wrap_it(make_config):
    class DictCache:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def cache_lookup(self, ctx) -> dict | None:
            return None

    assert "cache_lookup is annotated to return dict, but the core takes Completion | None: return a hookgate.Completion on a hit " \
        "(Completion(body) for a dict), None on a miss" in refused(make_config, DictCache)


def test_a_before_request_returning_a_verdict_is_told_to_raise(make_config):
    class Verdict:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def before_request(self, ctx) -> bool:
            return False

    assert "before_request is annotated to return bool, but the core takes None: its result is ignored: raise a GatewayError" in refused(
        make_config, Verdict
    )


def test_right_and_unresolvable_annotations_are_accepted(make_config):
    class Typed:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def cache_lookup(self, ctx) -> Completion | None:
            return None

        @hookimpl
        async def authenticate(self, credential) -> OnlyForTypeCheckers | None:  # noqa: F821 - not resolvable at run time
            return None

        @hookimpl
        def request_finished(self, ctx, outcome) -> None:
            pass

    start(make_config, Typed)


async def test_an_unannotated_cache_returning_a_dict_is_a_500_whose_log_names_it(gateway):
    class DictCache:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def cache_lookup(self, ctx):
            return completion("cached", model=ctx.body["model"]).body

    client = await gateway('[gateway]\npipeline = ["dict_cache", "echo"]', local={"dict_cache": DictCache})
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "req-dict"})
    assert response.status == 500 and "req-dict" in (await response.json())["error"]["message"]
    failure = next(entry for entry in logs if entry["event"] == "request_failed")
    assert "plugin 'dict_cache' returned a dict, not a Completion, in cache_lookup" in str(failure["exc_info"])


async def test_an_unannotated_authenticate_returning_a_string_is_a_500_whose_log_names_it(gateway):
    class StringAuth:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def authenticate(self, credential):
            return "team-a"

    client = await gateway('[gateway]\npipeline = ["string_auth", "echo"]', local={"string_auth": StringAuth})
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=GOOD, headers={"authorization": "Bearer k"})
    assert response.status == 500
    failure = next(entry for entry in logs if entry["event"] == "request_failed")
    assert "plugin 'string_auth' returned a str, not a ClientKey, in authenticate" in str(failure["exc_info"])


# ---------------------------------------------------------------------------- register() ---


def test_registering_something_that_is_not_a_provider_is_refused(make_config):
    class Confused:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        def register_providers(self, register):
            register("my-model")

    assert refused(make_config, Confused) == (
        "plugin 'p', register_providers: register() was given a str ('my-model'), which is not a hookgate.Provider "
        "(it needs name, models() and async complete(ctx); missing: name, models, complete)"
    )


def test_a_provider_with_a_synchronous_complete_is_refused(make_config):
    class SyncProvider:
        name = "sync"

        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        def register_providers(self, register):
            register(self)

        def models(self):
            return ["sync-model"]

        def complete(self, ctx):
            return completion("hi", model="sync-model")

    assert "register() was given provider 'sync', whose complete() is not 'async def' (the core awaits it)" in refused(make_config, SyncProvider)


def test_two_providers_of_one_name_name_the_plugin(make_config):
    class Copycat:
        name = "echo"

        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        def register_providers(self, register):
            register(self)

        def models(self):
            return ["copy"]

        async def complete(self, ctx):
            return completion("hi", model="copy")

    with pytest.raises(PipelineError) as caught:
        Gateway(make_config('[gateway]\npipeline = ["echo", "p"]', local={"p": Copycat}))
    assert str(caught.value) == "plugin 'p', register_providers: two providers are named 'echo'"


def test_a_metrics_collector_without_collect_is_refused(make_config):
    class NoCollect:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        def register_metrics(self, register):
            register({"hits": 1})

    assert "register_metrics: register() was given a dict, which is not a Prometheus collector (it needs collect())" in refused(
        make_config, NoCollect
    )


def test_a_startup_hook_that_raises_names_the_plugin(make_config):
    class Crashy:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        def register_providers(self, register):
            {}["missing"]

    assert refused(make_config, Crashy) == "plugin 'p', register_providers: raised KeyError: 'missing'"


# -------------------------------------------------------------- entry points, end to end ---

PACKAGE = '''
from hookgate import PluginConfig, hookimpl


class WordGuard:
    def __init__(self, config: PluginConfig) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        pass


class NoConfig:
    @hookimpl
    async def before_request(self, ctx):
        pass


class Unmarked:
    def __init__(self, config: PluginConfig) -> None:
        pass

    async def before_request(self, ctx):
        pass
'''

ENTRY_POINTS = {
    "gone": "hookgate_gone_package:WordGuard",
    "misspelt": "hookgate_mistakes:WordGard",
    "no_config": "hookgate_mistakes:NoConfig",
    "unmarked": "hookgate_mistakes:Unmarked",
    "needs_dependency": "hookgate_mistakes_deps:Plugin",
    "broken_module": "hookgate_mistakes_broken:Plugin",
}


@pytest.fixture(scope="module")
def mistakes_site(tmp_path_factory) -> Path:
    """A directory that, on PYTHONPATH, installs a distribution with one broken plugin per
    mistake (a .dist-info with entry points, as pip would write it)."""
    site = tmp_path_factory.mktemp("site")
    (site / "hookgate_mistakes.py").write_text(PACKAGE)
    (site / "hookgate_mistakes_deps.py").write_text("import hookgate_not_installed_dependency\n")
    (site / "hookgate_mistakes_broken.py").write_text("from hookgate import hookimpl\n\nVALUE = 1 / 0\n")
    info = site / "hookgate_mistakes-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hookgate-mistakes\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hookgate]\n" + "".join(f"{name} = {value}\n" for name, value in ENTRY_POINTS.items()))
    return site


def hookgate_cli(site: Path, tmp_path: Path, *args: str, pipeline: list[str] | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "plugins.toml"
    config.write_text(f"[gateway]\npipeline = {pipeline or ['echo']!r}\n".replace("'", '"'))
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    command = [HOOKGATE, *args] if args[0] == "plugins" else [HOOKGATE, *args, str(config)]
    if args[0] == "plugins":
        command += ["--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("gone", "plugin 'gone': entry point gone = 'hookgate_gone_package:WordGuard' of hookgate-mistakes 0.1 does not resolve: "
                 "there is no module 'hookgate_gone_package' (renamed, or installed from elsewhere? reinstall the package: pip install -e DIR)"),
        ("misspelt", "plugin 'misspelt': entry point misspelt = 'hookgate_mistakes:WordGard' of hookgate-mistakes 0.1 does not resolve: "
                     "module 'hookgate_mistakes' has no attribute 'WordGard' (did you mean 'WordGuard'?)"),
        ("needs_dependency", "failed to import: ModuleNotFoundError: No module named 'hookgate_not_installed_dependency' (at "),
        ("broken_module", "failed to import: ZeroDivisionError: division by zero (at "),
        ("no_config", "plugin 'no_config' (hookgate_mistakes:NoConfig): NoConfig.__init__ takes no config"),
        ("unmarked", "plugin 'unmarked' (hookgate_mistakes:Unmarked): before_request looks like a hook but is not marked @hookimpl"),
    ],
)
def test_check_config_names_the_broken_plugin_in_one_line(mistakes_site, tmp_path, plugin, message):
    result = hookgate_cli(mistakes_site, tmp_path, "check-config", pipeline=[plugin, "echo"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"hookgate: error: {tmp_path / 'plugins.toml'}: [gateway] pipeline: ")
    assert message in line


def test_serve_refuses_a_broken_entry_point_in_one_line(mistakes_site, tmp_path):
    result = hookgate_cli(mistakes_site, tmp_path, "serve", "--port", "0", "--config", pipeline=["gone", "echo"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "there is no module 'hookgate_gone_package'" in line


def test_hookgate_plugins_lists_broken_plugins_it_does_not_run(mistakes_site, tmp_path):
    result = hookgate_cli(mistakes_site, tmp_path, "plugins")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    listed = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert "(cannot be loaded) plugin 'gone'" in listed["gone"] and "not in pipeline" in listed["gone"]
    assert "did you mean 'WordGuard'?" in listed["misspelt"]
