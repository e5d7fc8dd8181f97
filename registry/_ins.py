"""INS (Identifiant National de Santé) rules, self-contained for the registry.

The registry stands alone (it imports nothing from the box), so it carries its own copy of the
rules it enforces on every manifest:

* the matricule is 15 characters: 13 for the NIR/NIA body (the department may be ``2A``/``2B``
  for Corsica) followed by a 2-digit check key ``97 - (body mod 97)`` (INSEE; ANS *Guide
  d'implémentation de l'INS*, §"Clé de contrôle");
* for the key, Corsica's ``2A`` counts as ``19`` and ``2B`` as ``18`` (INSEE rule);
* the assigning authority is one of the INS OIDs of the ANS *Référentiel INS* (production NIR/NIA,
  and the test and demonstration NIR OIDs that a production registry must refuse).
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "INS_NIA_OID",
    "INS_NIR_DEMO_OID",
    "INS_NIR_OID",
    "INS_NIR_TEST_OID",
    "INS_OIDS",
    "INS_TEST_OIDS",
    "URN_OID_PREFIX",
    "InsError",
    "InsKind",
    "ins_check_key",
    "ins_system",
    "oid_of_system",
    "validate_ins",
]

#: INS-NIR, production (ANS Référentiel INS, "OID des autorités d'affectation").
INS_NIR_OID = "1.2.250.1.213.1.4.8"
#: INS-NIA (numéro d'identification d'attente), production.
INS_NIA_OID = "1.2.250.1.213.1.4.9"
#: INS-NIR of the ANS test environment (used by every ANS sample: CDA, HL7 PID-3, KOS).
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
#: INS-NIR of the ANS demonstration environment.
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"

#: Every INS assigning authority the registry knows.
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID, INS_NIR_DEMO_OID})
#: Authorities that only exist outside production: refused by a production registry.
INS_TEST_OIDS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})

#: FHIR R4 §2.24.0.1 (Identifier.system): an OID is written ``urn:oid:<oid>``.
URN_OID_PREFIX = "urn:oid:"

_MATRICULE_LENGTH = 15
_BODY_LENGTH = 13
_KEY_MODULUS = 97
_CORSICA = {"2A": "19", "2B": "18"}  # INSEE: department letters replaced for the key
_MATRICULE = re.compile(r"^[1-8][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}$")


class InsKind(StrEnum):
    """The two kinds of INS matricule (ANS Référentiel INS)."""

    NIR = "NIR"
    NIA = "NIA"


class InsError(ValueError):
    """An INS identifier is malformed, has a wrong key, or an unknown or refused OID."""


def ins_system(oid: str) -> str:
    """Return the FHIR ``Identifier.system`` of an INS OID (``urn:oid:...``)."""
    return URN_OID_PREFIX + oid


def oid_of_system(system: str) -> str:
    """Return the OID inside a ``urn:oid:`` system; raise :class:`InsError` otherwise."""
    if not system.startswith(URN_OID_PREFIX):
        raise InsError(f"identifier system {system!r} is not an OID: expected 'urn:oid:<INS OID>'")
    return system[len(URN_OID_PREFIX) :]


def ins_check_key(body: str) -> int:
    """Return the 2-digit check key of a 13-character NIR/NIA body.

    Parameters
    ----------
    body
        The first 13 characters of the matricule; positions 6-7 may be ``2A`` or ``2B``.
    """
    department = body[5:7]
    digits = body[:5] + _CORSICA.get(department, department) + body[7:]
    if len(body) != _BODY_LENGTH or not digits.isdigit():
        raise InsError("an INS body is 13 digits (department 2A/2B allowed)")
    return _KEY_MODULUS - int(digits) % _KEY_MODULUS


def validate_ins(value: str, oid: str, *, production: bool) -> InsKind:
    """Check an INS matricule and its assigning authority.

    Parameters
    ----------
    value
        The 15-character matricule (body + key), as carried in PID-3 / ``Identifier.value``.
    oid
        The assigning authority OID.
    production
        When true, the test and demonstration OIDs are refused.

    Returns
    -------
    InsKind
        NIA for the NIA authority, NIR otherwise.

    Raises
    ------
    InsError
        With a message saying what is wrong (never the full matricule).
    """
    if oid not in INS_OIDS:
        raise InsError(
            f"unknown INS authority OID {oid!r}: expected one of {', '.join(sorted(INS_OIDS))}"
        )
    if production and oid in INS_TEST_OIDS:
        raise InsError(f"INS authority {oid} is a test OID, refused by a production registry")
    if len(value) != _MATRICULE_LENGTH or _MATRICULE.match(value) is None:
        raise InsError("an INS matricule is 15 characters: 13-digit NIR/NIA then a 2-digit key")
    if int(value[_BODY_LENGTH:]) != ins_check_key(value[:_BODY_LENGTH]):
        raise InsError("the INS matricule check key does not match (97 - body mod 97)")
    return InsKind.NIA if oid == INS_NIA_OID else InsKind.NIR
