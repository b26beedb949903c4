"""``python -m hookgate`` is the ``hookgate`` command."""
from .cli import main

main()
