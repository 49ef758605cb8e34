"""The iOS app badge: unread instant messages plus new voicemails.

Both the message push and the voicemail push carry it. Each knows its own count and
reads the other one here; a count that can't be read counts 0, because the badge is
not worth losing the push over.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sipwake.store.errors import log_failure
from sipwake.store.models import Mailbox

log = logging.getLogger("sipwake.badge")


class Counts(Protocol):
    async def unread_count(self, aor: str) -> int: ...

    async def get_mailbox(self, aor: str) -> Mailbox | None: ...


async def badge(
    store: Counts, aor: str, *, unread: int | None = None, new_voicemails: int | None = None
) -> int:
    if unread is None:
        try:
            unread = await store.unread_count(aor)
        except Exception as exc:
            log_failure(log, exc, "unread count of %s for the badge", aor)
            unread = 0
    if new_voicemails is None:
        try:
            mailbox = await store.get_mailbox(aor)
        except Exception as exc:
            log_failure(log, exc, "voicemail count of %s for the badge", aor)
            mailbox = None
        new_voicemails = mailbox.new_count if mailbox is not None else 0
    return unread + new_voicemails
