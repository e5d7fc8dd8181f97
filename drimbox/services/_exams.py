"""Pure helpers of the publication service: outbox jobs, instance digests, image facts."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from drimbox.identity import PatientIdentity, StudyFacts
from drimbox.model import InstanceLocation, JobAction, JobState, OutboxJob

__all__ = ["digest", "image_facts", "pending_job", "values"]


def pending_job(
    study_instance_uid: str,
    action: JobAction,
    version: int,
    kos_sop_instance_uid: str | None,
    now: datetime,
    *,
    kos_blob_key: str | None = None,
    submission: dict[str, Any] | None = None,
    replaces: str | None = None,
) -> OutboxJob:
    """A new outbox job, due now (the store assigns its id)."""
    return OutboxJob(
        job_id=0,
        study_instance_uid=study_instance_uid,
        action=action,
        version=version,
        kos_sop_instance_uid=kos_sop_instance_uid,
        kos_blob_key=kos_blob_key,
        submission=submission,
        replaces=replaces,
        state=JobState.PENDING,
        attempts=0,
        next_attempt_at=now,
        last_error=None,
        registry_entry_id=None,
        created_at=now,
    )


def digest(instances: list[InstanceLocation]) -> str:
    uids = sorted(location.sop_instance_uid for location in instances)
    return hashlib.sha256("\\".join(uids).encode()).hexdigest()


def values(dataset: dict[str, Any], tag: str) -> list[str]:
    element = dataset.get(tag) or {}
    return [str(v) for v in element.get("Value", []) if v is not None]


def image_facts(study_instance_uid: str, study: dict[str, Any]) -> StudyFacts:
    name = study.get("00100010", {}).get("Value", [{}])
    alphabetic = name[0].get("Alphabetic", "") if name and isinstance(name[0], dict) else ""
    family, _, given = alphabetic.partition("^")
    patient = PatientIdentity(
        ipp=next(iter(values(study, "00100020")), None),
        ipp_authority=next(iter(values(study, "00100021")), None),
        birth_name=family or None,
        first_given_name=given.split("^")[0] or None if given else None,
        birth_date=next(iter(values(study, "00100030")), None),
        sex=next(iter(values(study, "00100040")), None),
    )
    return StudyFacts(
        study_instance_uids=(study_instance_uid,) if study else (),
        accession_numbers=tuple(values(study, "00080050")),
        patient=patient,
    )
