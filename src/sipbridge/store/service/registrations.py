"""Registrations: each registering trunk's last known state, per instance.

Only the running server knows its REGISTER clients' state; it writes it here whenever it
changes (:func:`save_registration`, from runtime/registrations.py), so that ``sipbridge trunk
list`` and ``GET /api/trunks`` show it without asking a server. Each instance has its own
row per trunk (every instance registers its own contact); the instance's state in
``instances`` says whether a row is current (``running``, ``draining``) or history
(``stopped``: its last words were the un-REGISTER; ``lost``: it died holding whatever the
row says). Rows go with their trunk (:func:`~sipbridge.store.service.trunks.remove_trunk`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from sipbridge.numbers import InvalidField
from sipbridge.store.db import Database
from sipbridge.store.models import Instance, Registration
from sipbridge.store.records import InstanceState, RegistrationRecord, utcnow
from sipbridge.wiretext import clean

__all__ = ["REGISTRATION_STATES", "list_registrations", "save_registration"]

# As sip/registration.py's RegistrationState values.
REGISTRATION_STATES = ("registering", "registered", "failing", "unregistering", "unregistered")


async def save_registration(
    db: Database,
    trunk: str,
    instance: str,
    *,
    state: str,
    registered_until: datetime | None,
    last_status: int | None,
    last_reason: str | None,
    next_attempt: datetime | None,
    failures: int,
) -> None:
    """Write ``instance``'s registration with ``trunk`` (its row is created or replaced)."""
    if state not in REGISTRATION_STATES:
        raise InvalidField("state", f"{state!r} is not one of {', '.join(REGISTRATION_STATES)}")
    reason = None if last_reason is None else clean(last_reason)[:200] or None
    async with db.sessionmaker() as session, session.begin():
        row = await session.get(Registration, (trunk, instance))
        if row is None:
            row = Registration(trunk=trunk, instance=instance)
            session.add(row)
        row.state = state
        row.registered_until = registered_until
        row.last_status = last_status
        row.last_reason = reason
        row.next_attempt = next_attempt
        row.failures = failures
        row.updated_at = utcnow()


async def list_registrations(db: Database) -> list[RegistrationRecord]:
    """Every stored registration, by trunk then instance, with its instance's state."""
    query = (
        select(Registration, Instance.state)
        .outerjoin(Instance, Instance.id == Registration.instance)
        .order_by(Registration.trunk, Registration.instance)
    )
    async with db.sessionmaker() as session:
        rows = (await session.execute(query)).all()
    return [
        RegistrationRecord(
            trunk=row.trunk,
            instance=row.instance,
            state=row.state,
            registered_until=row.registered_until,
            last_status=row.last_status,
            last_reason=row.last_reason,
            next_attempt=row.next_attempt,
            failures=row.failures,
            updated_at=row.updated_at,
            instance_state=None if instance_state is None else InstanceState(instance_state),
        )
        for row, instance_state in rows
    ]
