"""Who calls the API: the backend's AWS principal, as API Gateway's ``AWS_IAM`` authorization names it.

Every route but TikTok's webhook is signed with SigV4. API Gateway verifies the signature and the
caller's permission (its IAM policies and the API's resource policy) before the function runs, and
hands the function the principal it verified as ``requestContext.identity.userArn``. That ARN is the
caller: the owner of every record and grant it creates.

An assumed role signs with a session of its own (``arn:aws:sts::123456789012:assumed-role/Backend/
i-0abc…``); sessions come and go (every Lambda container, every ECS task has its own), the role stays.
So the session name is folded away: two sessions of one role are one caller.
"""

from __future__ import annotations

import re

from tiktok_archive.models.errors import CallerNotIdentifiedError

MAX_CALLER_LENGTH = 2048
_ARN = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::[0-9]{12}:[\x21-\x7e]+")
_ASSUMED_ROLE = re.compile(r"(arn:aws[a-z-]*:sts::[0-9]{12}:assumed-role/[^/]+)/[^/]+")


def caller_of(user_arn: object) -> str:
    """The caller named by API Gateway's verified ``userArn``, its session name folded away.

    ``arn:aws:sts::123456789012:assumed-role/Backend/session-1`` → ``arn:aws:sts::123456789012:
    assumed-role/Backend``; an IAM user's or the account's ARN is kept as it is.

    Raises:
        CallerNotIdentifiedError: no ARN (the route was not called through ``AWS_IAM``
            authorization), or not an IAM or STS principal's ARN.
    """
    if not isinstance(user_arn, str) or len(user_arn) > MAX_CALLER_LENGTH or not _ARN.fullmatch(user_arn):
        raise CallerNotIdentifiedError(
            "the caller is not identified: sign the request with SigV4 (AWS_IAM authorization)"
        )
    role = _ASSUMED_ROLE.fullmatch(user_arn)
    return role.group(1) if role else user_arn
