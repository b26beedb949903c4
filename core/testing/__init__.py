"""Test helpers for plugin authors: local emulators of the providers' APIs.

``hookgate.testing.openai_emulator.OpenAIEmulator``, ``hookgate.testing.groq_emulator`` and
``hookgate.testing.anthropic_emulator`` serve the providers' wire formats on a free local port,
scriptable (answers, faults, latency) and counted, so a plugin's tests can go through the official
SDKs without a network or a key.
"""
