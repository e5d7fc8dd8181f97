"""The reference registry server: FastAPI (IHE MHD) over its own SQLite/PostgreSQL store."""

from registry.service.app import create_registry_app
from registry.service.cli import serve_registry
from registry.service.store import RegistryStore

__all__ = ["RegistryStore", "create_registry_app", "serve_registry"]
