"""The national registry of imaging manifests (IHE MHD): wire contract, client and server.

``registry`` imports nothing from the box; the box uses :class:`RegistryClient` and the values of
:mod:`registry.models`. Importing this package loads neither httpx (the client is
:mod:`registry.client`) nor the server (:mod:`registry.service`: FastAPI, SQLAlchemy).
"""

from registry.errors import (
    RegistryError,
    RegistryNotFoundError,
    RegistryRejectedError,
    RegistryUnavailableError,
)
from registry.models import (
    Coding,
    Confidentiality,
    EntryStatus,
    ManifestSubmission,
    Party,
    RegistryEntry,
    SearchPage,
    SearchQuery,
)

__all__ = [
    "Coding",
    "Confidentiality",
    "EntryStatus",
    "ManifestSubmission",
    "Party",
    "RegistryEntry",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
    "SearchPage",
    "SearchQuery",
]
