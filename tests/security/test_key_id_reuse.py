"""Threat: two gateway keys share one id, and so one cache namespace, one usage ledger, one rate
limit and one budget.

Issue 10 item 8: ``hookgate keys create ID`` accepted an id already defined in plugins.toml. It now
refuses it (the plugins.toml it checks is ``--config``, else ``$HOOKGATE_CONFIG``, else
``./plugins.toml``, as ``hookgate serve`` finds it), as it already refused an id Redis holds.
"""
from __future__ import annotations

import hashlib
import os
import subprocess

from servers import HOOKGATE

CONFIG = f"""
[gateway]
pipeline = ["api_keys", "echo"]
[plugins.api_keys.keys.team-a]
hash = "{hashlib.sha256(b"hg-team-a").hexdigest()}"
"""


def keys(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([HOOKGATE, "keys", *args], capture_output=True, text=True, timeout=30, cwd=cwd, env={**os.environ, **(env or {})})


def test_create_refuses_an_id_plugins_toml_defines(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(CONFIG)
    for found in (
        keys("create", "team-a", "--toml", "--config", str(config)),
        keys("create", "team-a", "--toml", cwd=tmp_path),  # ./plugins.toml
        keys("create", "team-a", "--toml", env={"HOOKGATE_CONFIG": str(config)}),
    ):
        assert found.returncode == 1 and found.stdout == ""  # no key printed
        assert "already defines a key with id 'team-a'" in found.stderr and len(found.stderr.splitlines()) == 1
    assert keys("create", "team-b", "--toml", "--config", str(config)).returncode == 0


def test_create_refuses_an_id_already_in_redis(redis_url, redis_prefix):
    first = keys("create", "bot", "--redis-url", redis_url, "--key-prefix", redis_prefix)
    assert first.returncode == 0, first.stderr
    again = keys("create", "bot", "--redis-url", redis_url, "--key-prefix", redis_prefix)
    assert again.returncode == 1 and "already exists" in again.stderr and again.stdout == ""
    keys("revoke", "bot", "--redis-url", redis_url, "--key-prefix", redis_prefix)


def test_an_unreadable_config_is_one_line_without_its_content(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_bytes(b'[plugins.api_keys.keys.x]\nhash = "\xff sk-secret-in-file"\n')
    found = keys("create", "x", "--toml", "--config", str(config))
    assert found.returncode == 1 and found.stderr.strip() == f"hookgate keys: error: {config}: not UTF-8 text"
