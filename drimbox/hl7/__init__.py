"""HL7 v2 adapter: MLLP listener (:mod:`.mllp`), ER7 and ORU/MDM parsing with ACKs
(:mod:`.er7`, :mod:`.messages`), CDA R2 report headers (:mod:`.cda`), the durable inbox
(:mod:`.inbox`) and report vigilance (:mod:`.vigilance`)."""

__all__: list[str] = []
