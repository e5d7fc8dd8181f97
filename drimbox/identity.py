"""INS identity rules (filled in by the source-workflow work)."""
