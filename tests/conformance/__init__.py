"""Published wire schemas of the APIs hookgate speaks, and validators for them (see README.md)."""
