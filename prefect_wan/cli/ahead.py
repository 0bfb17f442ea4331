"""The command's first pair, sent while Prefect loads.

Importing Prefect takes about a second here, and its flow engine and first task run another: a
plain script on the official SDK has sent its first create by then. So once every refusal has
passed, a command that runs pairs sends its first one itself, before Prefect is imported, through
the journal, lock and submission key the run uses (``ledger.sending``); the run then takes that
task as its own: paid once, charged to the run, cancelled with it.

Only where nothing but the account governs a create: no budget (the run's or a daily one), no
shared coordination, no review, no ``--force``, no fan-out, a key and host from the flags or the
emulator, and a Prefect home known without Prefect (``PrefectPlaces``). A run that never takes the
task (its server did not start, Ctrl-C before it began) has it cancelled while still queued.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import httpx

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.record import StoryboardRecord
from prefect_wan.archive.store import find_archived
from prefect_wan.client.access import ServiceAccess
from prefect_wan.client.client import DashScopeClient
from prefect_wan.client.errors import WanError
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.flows.prepared import hand_over, take_handed_over
from prefect_wan.ledger.journal import COORDINATION_ENV, SubmissionJournal
from prefect_wan.ledger.keys import key_of
from prefect_wan.ledger.locks import default_lock_manager
from prefect_wan.ledger.places import PrefectPlaces
from prefect_wan.ledger.sending import SentAhead, send_ahead, untaken

if TYPE_CHECKING:
    from prefect_wan.cli.options import TargetFlags
    from prefect_wan.flows.models import GenerationOptions, KeyframePair

_LOGGER = logging.getLogger("prefect_wan.cli.ahead")
# What it says (a throttled send, a lost answer) is the run's to report, in Prefect: not on the terminal.
_LOGGER.addHandler(logging.NullHandler())
# What the journal says sent a task until its run takes it: cancelling by it cancels the untaken.
COMMAND_SENDER = f"prefect-wan-command-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class HeadStart:
    """The first pair of a command and where it goes."""

    access: ServiceAccess
    options: GenerationOptions
    destination: str
    pair: Optional[KeyframePair] = None  # a batch's is known once its manifest is read
    whole: Optional[str] = None  # a storyboard's fingerprint: nothing is sent when it is archived whole

    async def send(self, places: PrefectPlaces) -> Optional[SentAhead]:
        """The pair prepared (and handed to the run), then sent unless archived or recorded; None
        when nothing was sent. A refusal or a lost answer leaves the pair to the run, which settles
        what the journal says before sending anything."""
        if self.pair is None:
            return None
        request = self.pair.to_request(self.options)
        label = self.pair.display_label()
        try:
            async with self.access.client() as client:
                return await self._send(client, request, label, places)
        except (WanError, httpx.HTTPError, OSError) as error:
            # A batch's pair whose frames cannot be read fails alone, in the run, as it always has.
            _LOGGER.info("%s: left to the run: %s", label, error)
            return None

    async def _send(self, client: DashScopeClient, request: KeyframeVideoRequest, label: str, places: PrefectPlaces) -> Optional[SentAhead]:
        prepared = take_handed_over(request, self.access.region.value) or await client.prepare(request)
        hand_over(prepared)
        destination = ArchiveDestination.coerce(self.destination)
        if await find_archived(destination, prepared.fingerprint, self.access.endpoint) is not None:
            return None
        if self.whole is not None and await find_archived(destination, self.whole, self.access.endpoint, record_type=StoryboardRecord) is not None:
            return None
        return await send_ahead(
            client,
            SubmissionJournal(home=places.home),
            default_lock_manager(places.home),
            prepared,
            key=key_of(prepared.fingerprint, self.access),
            endpoint=self.access.endpoint,
            label=label,
            logger=_LOGGER,
            sender=COMMAND_SENDER,
        )


def head_start(
    account: Union[ServiceAccess, str],
    where: TargetFlags,
    options: GenerationOptions,
    *,
    pair: Optional[KeyframePair] = None,
    review: bool = False,
    fan_out: bool = False,
) -> Optional[HeadStart]:
    """The command's head start, where nothing but the account governs its first create; else None."""
    if not isinstance(account, ServiceAccess):  # a saved block: only Prefect can load it
        return None
    if where.coordination or os.environ.get(COORDINATION_ENV) or where.max_cost or where.force or review or fan_out:
        return None
    return HeadStart(account, options, where.dest, pair)


async def cancel_untaken(access: ServiceAccess, places: PrefectPlaces) -> Optional[str]:
    """Cancel the tasks sent ahead that no run took, while still queued; what became of them, or
    None when every one was taken."""
    if not untaken():
        return None
    from prefect_wan.blocks.credentials import WanCredentials
    from prefect_wan.flows.cancellation import cancel_queued_tasks

    report = await cancel_queued_tasks(COMMAND_SENDER, WanCredentials.of(access), SubmissionJournal(home=places.home))
    fates = [f"task {task} was canceled while queued (not billed)" for task in report.canceled]
    fates += [f"task {task} is running: it bills, and the next run adopts it" for task in report.running]
    fates += [f"task {task} has finished: the next run archives it without paying" for task in report.finished]
    fates += [f"task {task}: {error}; the next run adopts it" for task, error in report.errors.items()]
    return "the first pair, sent before the run started: " + ("; ".join(fates) or "its task has no record left to settle")
