"""A worker's wait for the schema registry: a partition's batch of Avro values is held until the
registry has answered for every schema id it names.

Replay dead-letters a value whose schema the registry did not give (`monitor.contract.registry`).
A worker must not: the registry being down for a minute would take those decisions out of the
numbers for good. It holds the batch instead, asking again with a growing pause, in a thread so
that the event loop keeps the group's heartbeats. Its records stay uncommitted meanwhile, so a
restart reads them again. An id the registry does not have is no reason to wait: those values are
dead-lettered as in replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from monitor.contract.avro import schema_ids
from monitor.contract.events import Payload
from monitor.contract.registry import Missing, Schemas, Unanswered

FIRST_PAUSE = 0.5  # seconds before asking again; doubles up to LONGEST_PAUSE
LONGEST_PAUSE = 30.0
log = logging.getLogger(__name__)


class SchemaWait:
    def __init__(self, schemas: Schemas, pause: float = FIRST_PAUSE) -> None:
        self.schemas = schemas
        self.pause = pause
        self.waiting: str | None = None  # why a batch is held, for /healthz

    async def ready(self, values: Iterable[Payload | None], wanted: Callable[[], bool]) -> None:
        """Return once the registry has answered for every schema id in `values`, or once `wanted()`
        turns false (the partition was revoked: its next owner reads the batch again)."""
        for schema_id in sorted(schema_ids(v for v in values if v is not None)):
            pause, since = self.pause, time.monotonic()
            while schema_id not in self.schemas and wanted():
                try:
                    await asyncio.to_thread(self.schemas.get, schema_id, True)
                except Missing:
                    break  # never readable: the engine dead-letters those values
                except Unanswered as exc:
                    if self.waiting is None or pause >= LONGEST_PAUSE:
                        log.warning("holding records until the schema registry answers (%.0f s so far): %s",
                                    time.monotonic() - since, exc.reason)
                    self.waiting = exc.reason
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, LONGEST_PAUSE)
            self.waiting = None
