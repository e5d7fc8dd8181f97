"""Wire contract of the national registry (filled in by the registry work)."""
