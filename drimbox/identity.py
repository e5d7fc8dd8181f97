"""INS identity rules: check keys, OIDs, qualified status and identity coherence.

The INS (Identifiant National de Santé) is the patient's NIR (or, while it is being assigned,
NIA) published with the OID of its assigning authority. The rules implemented here come from
the ANS "Référentiel INS" and the "Guide d'implémentation de l'INS dans les logiciels":

- a matricule is 13 characters (sex, year, month, department, commune, order number) followed
  by a 2-digit check key ``97 - (number mod 97)``; the Corsican departments ``2A`` and ``2B``
  count as ``19`` and ``18`` for the key;
- the OID says what the matricule is (NIR, NIA) and whether it is a test or demonstration
  identity, which production must refuse;
- an identity is *qualified* when its status (PID-32, HL7 table 0445 as extended by IHE PAM
  France) is ``VALI`` and an INS is present.

Everything here is pure: no I/O, no logging. Reasons returned for a quarantine never contain
identity values, only what differs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "INS_NIA_NAMESPACE",
    "INS_NIA_OID",
    "INS_NIR_DEMO_OID",
    "INS_NIR_NAMESPACE",
    "INS_NIR_OID",
    "INS_NIR_TEST_OID",
    "INS_OIDS",
    "IdentityReliability",
    "InsKind",
    "PatientIdentity",
    "StudyFacts",
    "identity_from_dicom",
    "identity_mismatches",
    "ins_check_key",
    "ins_kind",
    "ins_problems",
    "is_qualified",
    "is_test_oid",
    "is_valid_nia",
    "is_valid_nir",
    "publication_problems",
    "study_mismatches",
]

INS_NIR_OID = "1.2.250.1.213.1.4.8"
"""OID of the INS-NIR (Référentiel INS, §"Identifiants": production NIR)."""
INS_NIA_OID = "1.2.250.1.213.1.4.9"
"""OID of the INS-NIA (Référentiel INS: numéro identifiant d'attente)."""
INS_NIR_TEST_OID = "1.2.250.1.213.1.4.10"
"""OID of the test INS-NIR (Référentiel INS; used by every ANS DRIM-M sample)."""
INS_NIR_DEMO_OID = "1.2.250.1.213.1.4.11"
"""OID of the demonstration INS-NIR (Référentiel INS)."""
INS_NIR_NAMESPACE = "ASIP-SANTE-INS-NIR"
"""Assigning authority namespace of the INS-NIR (PID-3.4.1 in the ANS samples; IssuerOfPatientID
of the ANS KOS sample ``informatif/KIN/Manifest_KOS``)."""
INS_NIA_NAMESPACE = "ASIP-SANTE-INS-NIA"
"""Assigning authority namespace of the INS-NIA."""


class InsKind(StrEnum):
    """What an INS matricule is."""

    NIR = "NIR"
    NIA = "NIA"


INS_OIDS: MappingProxyType[str, InsKind] = MappingProxyType(
    {
        INS_NIR_OID: InsKind.NIR,
        INS_NIA_OID: InsKind.NIA,
        INS_NIR_TEST_OID: InsKind.NIR,
        INS_NIR_DEMO_OID: InsKind.NIR,
    }
)
"""Every INS assigning-authority OID and the kind of matricule it qualifies."""

_TEST_OIDS = frozenset({INS_NIR_TEST_OID, INS_NIR_DEMO_OID})

_MATRICULE_LENGTH = 13
_KEY_MODULUS = 97  # Référentiel INS: key = 97 - (matricule mod 97)
_CORSICA_DEPARTMENTS = MappingProxyType({"2A": "19", "2B": "18"})  # INSEE rule for the key
_MATRICULE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}")
_KEY = re.compile(r"[0-9]{2}")
_NIR_SEX_DIGITS = frozenset("1234")  # 1/3 male, 2/4 female (3/4: born abroad, historical)
_NIA_SEX_DIGITS = frozenset("78")  # NIA: 7 male, 8 female
_MALE_DIGITS = frozenset("137")
_FEMALE_DIGITS = frozenset("248")
_FIRST_MONTH, _LAST_MONTH = 1, 12  # other values (20-42, 50-99) mean "unknown month" in a NIR


class IdentityReliability(StrEnum):
    """Identity reliability codes of PID-32 (HL7 table 0445, IHE PAM France extension)."""

    EMPTY = "VIDE"
    PROVISIONAL = "PROV"
    VALIDATED = "VALI"
    DUPLICATE = "DOUB"
    DEACTIVATED = "DESA"
    POTENTIAL_DUPLICATE = "DPOT"
    DOUBTFUL = "DOUT"
    FICTITIOUS = "FICT"


_DISQUALIFYING = frozenset(
    {
        IdentityReliability.DUPLICATE,
        IdentityReliability.DEACTIVATED,
        IdentityReliability.POTENTIAL_DUPLICATE,
        IdentityReliability.DOUBTFUL,
        IdentityReliability.FICTITIOUS,
    }
)


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """A patient identity as carried by a report (PID / CDA recordTarget) or by images.

    Attributes
    ----------
    ins
        The INS matricule (15 characters), or ``None`` when the sender gave none.
    ins_oid
        OID of the INS assigning authority (one of :data:`INS_OIDS` when valid).
    qualified
        ``True`` when the sender declared the identity qualified (PID-32 ``VALI`` with an INS).
    ipp
        The local patient identifier (IPP) and ``ipp_authority`` the OID of its assigning
        authority.
    birth_name
        Birth family name (PID-5 type ``L``; CDA ``family qualifier="BR"``).
    first_given_name
        First birth given name (PID-5.2; CDA ``given qualifier="BR"``).
    given_names
        Every birth given name, in order (PID-5.3; CDA ``given`` without qualifier).
    birth_date
        ``YYYYMMDD``.
    sex
        Administrative sex (``M``, ``F``, ``U``...).
    birth_place_code
        INSEE code of the birth commune (PID-11 type ``BDL``; CDA ``birthplace/place/addr/county``).
    """

    ins: str | None = None
    ins_oid: str | None = None
    qualified: bool = False
    ipp: str | None = None
    ipp_authority: str | None = None
    birth_name: str | None = None
    first_given_name: str | None = None
    given_names: tuple[str, ...] = ()
    birth_date: str | None = None
    sex: str | None = None
    birth_place_code: str | None = None


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What a report, or the images held for a study, say about the study.

    Attributes
    ----------
    study_instance_uids
        The study UIDs (a report may document several studies).
    accession_numbers
        Accession numbers.
    patient
        The patient identity (for images: PatientID/IssuerOfPatientID, name, birth date, sex).
    """

    study_instance_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    patient: PatientIdentity = PatientIdentity()


def ins_check_key(matricule: str) -> int:
    """Return the check key of a 13-character INS matricule.

    Parameters
    ----------
    matricule
        Sex, year, month, department (``2A``/``2B`` allowed), commune and order number.

    Returns
    -------
    int
        ``97 - (number mod 97)``, the department ``2A`` counting as ``19`` and ``2B`` as ``18``.

    Raises
    ------
    ValueError
        When ``matricule`` is not 13 characters of the expected form.
    """
    if len(matricule) != _MATRICULE_LENGTH or not _MATRICULE.fullmatch(matricule):
        raise ValueError("an INS matricule is 13 characters: digits, department 2A/2B allowed")
    department = matricule[5:7]
    digits = matricule[:5] + _CORSICA_DEPARTMENTS.get(department, department) + matricule[7:]
    return _KEY_MODULUS - int(digits) % _KEY_MODULUS


def _has_valid_key(value: str) -> bool:
    if len(value) != _MATRICULE_LENGTH + 2 or not _KEY.fullmatch(value[_MATRICULE_LENGTH:]):
        return False
    try:
        return ins_check_key(value[:_MATRICULE_LENGTH]) == int(value[_MATRICULE_LENGTH:])
    except ValueError:
        return False


def is_valid_nir(value: str) -> bool:
    """Return whether ``value`` is a well-formed NIR (15 characters) with a correct key."""
    return value[:1] in _NIR_SEX_DIGITS and _has_valid_key(value)


def is_valid_nia(value: str) -> bool:
    """Return whether ``value`` is a well-formed NIA (15 characters) with a correct key."""
    return value[:1] in _NIA_SEX_DIGITS and _has_valid_key(value)


def ins_kind(oid: str | None) -> InsKind | None:
    """Return the kind of matricule an INS OID qualifies, or ``None`` for a foreign OID."""
    return INS_OIDS.get(oid or "")


def is_test_oid(oid: str | None) -> bool:
    """Return whether ``oid`` is the test or demonstration INS-NIR OID (refused in production)."""
    return oid in _TEST_OIDS


def is_qualified(reliability_codes: Iterable[str], has_ins: bool) -> bool:
    """Return whether an identity is qualified.

    Parameters
    ----------
    reliability_codes
        The repetitions of PID-32 (HL7 table 0445, IHE PAM France).
    has_ins
        Whether an INS with an INS OID accompanies the identity (PID-3 type ``INS``).

    Returns
    -------
    bool
        ``True`` when ``VALI`` is present, no disqualifying code (duplicate, deactivated,
        doubtful, fictitious) is, and an INS is present.
    """
    codes = {code.strip().upper() for code in reliability_codes}
    return has_ins and IdentityReliability.VALIDATED in codes and not codes & _DISQUALIFYING


def ins_problems(identity: PatientIdentity, *, allow_test_oids: bool = True) -> list[str]:
    """Return why the INS of ``identity`` is unusable (empty when it is fine).

    Parameters
    ----------
    identity
        The identity to check.
    allow_test_oids
        ``False`` in production: test and demonstration INS OIDs are refused.

    Returns
    -------
    list of str
        Reasons without identity values.
    """
    if not identity.ins:
        return ["no INS in the identity"]
    kind = ins_kind(identity.ins_oid)
    if kind is None:
        return ["INS assigning authority OID is not an INS OID"]
    problems = []
    if not allow_test_oids and is_test_oid(identity.ins_oid):
        problems.append("INS has a test/demonstration OID, refused in production")
    valid = is_valid_nir(identity.ins) if kind is InsKind.NIR else is_valid_nia(identity.ins)
    if not valid:
        problems.append(f"INS is not a valid {kind.value} (format or check key)")
    else:
        problems.extend(_trait_problems(identity))
    return problems


def _trait_problems(identity: PatientIdentity) -> list[str]:
    """Compare the traits encoded in the matricule (sex, year, month of birth) with the identity."""
    ins = identity.ins or ""
    problems = []
    sex = (identity.sex or "").upper()
    if (sex == "M" and ins[0] not in _MALE_DIGITS) or (sex == "F" and ins[0] not in _FEMALE_DIGITS):
        problems.append("sex differs from the sex encoded in the INS")
    birth = identity.birth_date or ""
    if len(birth) >= len("YYYYMM") and birth[:6].isdigit():
        if birth[2:4] != ins[1:3]:
            problems.append("birth year differs from the year encoded in the INS")
        month = int(ins[3:5])
        if _FIRST_MONTH <= month <= _LAST_MONTH and birth[4:6] != ins[3:5]:
            problems.append("birth month differs from the month encoded in the INS")
    return problems


def publication_problems(identity: PatientIdentity, *, allow_test_oids: bool = True) -> list[str]:
    """Return why a report for ``identity`` must not be published (empty when it may be).

    Parameters
    ----------
    identity
        The identity carried by the report.
    allow_test_oids
        ``False`` in production.

    Returns
    -------
    list of str
        The INS problems (see :func:`ins_problems`) and the qualified-status requirement.
    """
    problems = ins_problems(identity, allow_test_oids=allow_test_oids)
    if not identity.qualified:
        problems.append("identity is not qualified (PID-32 must be VALI with an INS)")
    return problems


def _normalised(text: str | None) -> str:
    """Upper-case, accents removed, separators collapsed: the INS comparison form of a name."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    letters = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return " ".join(re.split(r"[\s\-']+", letters)).strip()


def identity_mismatches(
    first: PatientIdentity,
    second: PatientIdentity,
    *,
    labels: tuple[str, str] = ("a", "b"),
    compare_birth_place: bool = True,
) -> list[str]:
    """Compare two identities trait by trait; a trait absent on either side is not compared.

    Parameters
    ----------
    first, second
        The identities (e.g. HL7 PID and CDA recordTarget, or report and images).
    labels
        How to name each side in the reasons.
    compare_birth_place
        Whether the birth place code (an INS trait) is compared.

    Returns
    -------
    list of str
        One reason per differing trait, naming the trait and the sides, never the values.
    """
    left, right = labels
    pairs: list[tuple[str, str | None, str | None]] = [
        ("INS", first.ins, second.ins),
        ("INS OID", first.ins_oid, second.ins_oid),
        ("birth date", first.birth_date, second.birth_date),
        ("sex", (first.sex or "").upper() or None, (second.sex or "").upper() or None),
    ]
    if compare_birth_place:
        pairs.append(("birth place code", first.birth_place_code, second.birth_place_code))
    if first.ipp_authority == second.ipp_authority:
        pairs.append(("IPP", first.ipp, second.ipp))
    names = [
        ("birth name", first.birth_name, second.birth_name),
        ("first given name", first.first_given_name, second.first_given_name),
    ]
    reasons = [
        f"{trait} differs between {left} and {right}"
        for trait, one, other in pairs
        if one and other and one != other
    ]
    reasons += [
        f"{trait} differs between {left} and {right}"
        for trait, one, other in names
        if one and other and _normalised(one) != _normalised(other)
    ]
    return reasons


def identity_from_dicom(
    patient_id: str | None,
    issuer_of_patient_id: str | None = None,
    *,
    issuer_oid: str | None = None,
    patient_name: str | None = None,
    birth_date: str | None = None,
    sex: str | None = None,
) -> PatientIdentity:
    """Build the identity that stored images carry (Patient module, PS3.3 §C.7.1.1).

    Parameters
    ----------
    patient_id, issuer_of_patient_id
        PatientID and IssuerOfPatientID.
    issuer_oid
        UniversalEntityID of IssuerOfPatientIDQualifiersSequence, when present.
    patient_name
        PatientName as ``FAMILY^GIVEN^...``.
    birth_date, sex
        PatientBirthDate and PatientSex.

    Returns
    -------
    PatientIdentity
        The PatientID is read as an INS when its issuer (OID or INS namespace) is an INS
        authority, otherwise as an IPP of that issuer. ``qualified`` is never set.
    """
    oid = issuer_oid or (issuer_of_patient_id if ins_kind(issuer_of_patient_id) else None)
    namespace = (issuer_of_patient_id or "").strip().upper()
    is_ins = ins_kind(oid) is not None or namespace in {INS_NIR_NAMESPACE, INS_NIA_NAMESPACE}
    if is_ins and oid is None:
        oid = INS_NIA_OID if namespace == INS_NIA_NAMESPACE else None
    family, _, rest = (patient_name or "").partition("^")
    given = rest.split("^", 1)[0]
    return PatientIdentity(
        ins=(patient_id or None) if is_ins else None,
        ins_oid=oid if is_ins else None,
        ipp=None if is_ins else (patient_id or None),
        ipp_authority=None if is_ins else (issuer_oid or issuer_of_patient_id or None),
        birth_name=family or None,
        first_given_name=given or None,
        given_names=tuple(given.split()) if given else (),
        birth_date=birth_date or None,
        sex=sex or None,
    )


def study_mismatches(
    report: StudyFacts, images: StudyFacts, *, compare_birth_place: bool = True
) -> list[str]:
    """Return why the images held do not belong to the report (empty when coherent).

    Parameters
    ----------
    report
        What the report says (CDA serviceEvent ids, inFulfillmentOf accession, recordTarget).
    images
        What the stored instances say (StudyInstanceUID, AccessionNumber, patient attributes).

    Returns
    -------
    list of str
        Reasons for a quarantine: unknown study, accession mismatch, patient mismatch.
    """
    reasons = []
    if not report.study_instance_uids:
        reasons.append("the report names no StudyInstanceUID")
    elif not set(images.study_instance_uids) & set(report.study_instance_uids):
        reasons.append("StudyInstanceUID of the report does not match the images")
    report_accessions = {a for a in report.accession_numbers if a}
    image_accessions = {a for a in images.accession_numbers if a}
    if report_accessions and image_accessions and not report_accessions & image_accessions:
        reasons.append("AccessionNumber of the report does not match the images")
    reasons += identity_mismatches(
        report.patient,
        images.patient,
        labels=("report", "images"),
        compare_birth_place=compare_birth_place,
    )
    return reasons
