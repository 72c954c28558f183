"""What the stages of a streaming worker persist, and how epochs fence a zombie owner.

State is persisted into key-value stores (the Faust tables), each key under the epoch of the
owner that wrote it (`<e>/` and `<e>|`; absent for epoch 0, as older workers wrote them):

    join     "<p>/<e>/log/<seq>/<i>"   the changes of checkpoint <seq> (chunk <i>)
             "<p>/<e>/snap/<gen>/<i>"  a snapshot of the whole partition
             "<p>/<e>/head"            which snapshot is current, and as of which checkpoint
    metrics  "<q>|<e>|s<slice, segment>"  an open slice: merged summary, and what it took in
             "<q>|<e>|b<segment>"         a segment's closed slices, folded into one base
             "<q>|<e>|a<alert id>"        an alert not yet confirmed on the alerts topic
             "<q>|<e>|watermarks"         the newest watermark of each source
             "<q>|<e>|fences"             per source: its newest owner, where it took over, the last checkpoint merged
             "<q>|<e>|complete"           everything of the partition is written under <e>
             "e<q>|<e>|..."               its early readings (`monitor.stream.early_store`)

**Epochs fence a zombie owner.** A worker frozen past its session timeout wakes up still thinking it
owns its partitions; until it hears of the rebalance, its writes land after the new owner's. An
owner's epoch is the group generation that gave it the partition, so a newer owner's is always larger.
A restore reads only the newest epoch's state (a join partition's newest head and the checkpoints of
that epoch after it; a metrics partition's newest complete epoch), and an owner's first write is its
whole state under its own epoch, so nothing a zombie writes later is ever read. A join partition's new
owner sends a fence to every metrics partition before it restores; from then on, a metrics partition
holds back the deltas of older owners until the new owner's first delta says which checkpoint it
restored (its seq - 1): those up to it are the history it continues, those after it a zombie's fork,
dropped. See `Worker.assign`.
"""

from __future__ import annotations

from collections.abc import ItemsView
from typing import Protocol


class Store(Protocol):
    """Where a stage's state is read back from after a restart (a Faust table's data, or a dict)."""

    def items(self) -> ItemsView[bytes, bytes]: ...


Write = tuple[bytes, bytes | None]  # a key and its new value; None deletes it


class Ownership:
    """The partitions a stage was given, each with its epoch, and those taken away since.

    Faust may still hand a stage a batch, a tick or a delta of a partition it has just lost, fetched
    before the rebalance: touching it would restore a copy of the partition beside its new owner's,
    and save it under the new owner's epoch. `owns` is false for such a partition until it is given back."""

    def __init__(self) -> None:
        self.epochs: dict[int, int] = {}  # per partition, the epoch this worker was given it in
        self.revoked: set[int] = set()  # taken away and not given back

    def assign(self, partitions: set[int], epoch: int) -> None:
        for partition in partitions:
            self.epochs[partition] = epoch
        self.revoked -= partitions

    def revoke(self, partitions: set[int]) -> None:
        self.revoked |= partitions

    def owns(self, partition: int) -> bool:
        return partition not in self.revoked

    def epoch(self, partition: int) -> int:
        return self.epochs.get(partition, 0)
