"""The conditions of the download records' writes, derived from the lifecycle table and the owner.

:func:`condition` turns a :class:`~tiktok_archive.models.record_lifecycle.Transition` into DynamoDB's
condition expression (the states it may happen from, a lapsed lease, its guard); :func:`ownership` adds
who may act (:class:`~tiktok_archive.models.download_record.Owner`). The in-memory fake of the tests
decides with the same table (``Transition.allows``).
"""

from __future__ import annotations

from typing import Any

from tiktok_archive.adapters.dynamodb_items import epoch_value
from tiktok_archive.models.clock import utc_now as _now
from tiktok_archive.models.download_record import Owner, caller_user
from tiktok_archive.models.record_lifecycle import ABSENT, CLAIM, SCHEDULE, Event, transition


def condition_of(event: Event) -> str:
    """``event``'s condition expression as the table derives it (for the docs and the tests)."""
    return condition(event, {}, seq=0, lease_owner="owner")


def condition(event: Event, values: dict[str, Any], *, seq: int | None, lease_owner: str | None) -> str:
    """The condition the lifecycle table gives ``event``; its values are added to ``values``."""
    rule = transition(event)
    states = [s for s in rule.sources if s != ABSENT]
    alternatives = []
    if ABSENT in rule.sources:
        alternatives.append("attribute_not_exists(request_id)")
    if states:
        names = []
        for state in states:
            values[f":from_{state}"] = {"S": str(state)}
            names.append(f":from_{state}")
        alternatives.append(f"#status IN ({', '.join(names)})")
    if rule.lapsed:
        names = []
        for state in rule.lapsed:
            values[f":from_{state}"] = {"S": str(state)}
            names.append(f":from_{state}")
        values[":now_epoch"] = epoch_value(_now())
        alternatives.append(f"(#status IN ({', '.join(names)}) AND lease_expires_at < :now_epoch)")
    condition = " OR ".join(alternatives)
    if rule.guard == SCHEDULE:
        values[":seq"] = {"N": str(seq)}
        condition = f"({condition}) AND poll_seq = :seq"
    elif rule.guard == CLAIM:
        values[":lease_owner"] = {"S": str(lease_owner)}
        condition = f"({condition}) AND lease_owner = :lease_owner"
    return condition


def ownership(owner: Owner, values: dict[str, Any]) -> tuple[list[str], str]:
    """The SET clauses and the condition that make a write ``owner``'s; their values go into ``values``."""
    if owner.service:
        return [], "attribute_exists(request_id)"
    sets: list[str] = []
    if owner.caller is None:
        condition = "attribute_not_exists(request_id) OR attribute_not_exists(caller)"
    else:
        values[":caller"] = {"S": owner.caller}
        sets.append("caller = if_not_exists(caller, :caller)")
        condition = "attribute_not_exists(request_id) OR caller = :caller"
        if owner.user_openid is not None:
            values[":caller_user"] = {"S": caller_user(owner.caller, owner.user_openid)}
            sets.append("caller_user = if_not_exists(caller_user, :caller_user)")
    if owner.user_openid is not None:
        values[":user"] = {"S": owner.user_openid}
        sets.append("user_openid = if_not_exists(user_openid, :user)")
    if owner.grant_id is not None:
        values[":grant"] = {"S": owner.grant_id}
        sets.append("grant_id = if_not_exists(grant_id, :grant)")
    return sets, condition
