"""The pluggy markers, made once for the project.

Plugin authors import ``hookimpl`` from :mod:`hookgate`; the hookspec marker is for the core's
own specifications and for plugins that add hooks of their own.
"""
from __future__ import annotations

import pluggy

PROJECT_NAME = "hookgate"
"""The pluggy project name, and the entry-point group third-party plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
