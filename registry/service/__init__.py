"""The reference registry server."""
