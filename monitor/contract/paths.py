"""Record shapes: the paths a spec reads into a record's value, as msgspec types that decode only them.

A tree maps each key to its subtree, or to a leaf `(type, required, default)`; `shape_of` makes one
struct type per level (attribute `f<i>` for its i-th key in sorted order) and `chain` the
attributes that lead along a path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from monitor.contract.errors import RecordError

KEY, STAMP = "@key", "@timestamp"  # paths to the record's key (text) and Kafka timestamp (epoch ms)


def off_record(what: str) -> tuple[Callable[[bytes | str | None], str], Callable[[int | None], int]]:
    """Readers of the record's key and Kafka timestamp, for fields mapped to `@key` and `@timestamp`."""

    def key_of(key: bytes | str | None) -> str:
        if key is None:
            raise RecordError(f"{what}: the record has no key, which {KEY} reads")
        try:
            return key if isinstance(key, str) else key.decode()
        except UnicodeDecodeError:
            raise RecordError(f"{what}: the record key is not Unicode text, which {KEY} reads") from None

    def stamp_of(stamp: int | None) -> int:
        if stamp is None:
            raise RecordError(f"{what}: the record has no Kafka timestamp, which {STAMP} reads")
        return stamp

    return key_of, stamp_of


def shape_of(name: str, tree: dict[str, Any]) -> type[msgspec.Struct]:
    """A struct type shaped like the records that `tree` (key -> subtree, or a leaf) describes."""
    return _struct(name, tree)[0]


def _struct(name: str, tree: dict[str, Any]) -> tuple[type[msgspec.Struct], bool]:
    """A struct type for one level of the record (field `f<i>` for its i-th key in sorted order), and
    whether anything below is required."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    needed = False
    for i, key in enumerate(sorted(tree)):
        attr, leaf = f"f{i}", tree[key]
        rename[attr] = key
        if isinstance(leaf, dict):
            inner, required = _struct(f"{name}_{i}", leaf)
            fields.append((attr, inner) if required else (attr, inner | None, msgspec.field(default_factory=inner)))
        else:
            kind, required, fallback = leaf
            fields.append((attr, kind) if required else (attr, kind, fallback))
        needed = needed or required
    return msgspec.defstruct(name, fields, kw_only=True, rename=rename), needed


def chain(tree: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    """The struct attributes that lead along a path."""
    chain = []
    node = tree
    for step in path:
        chain.append(f"f{sorted(node).index(step)}")
        node = node[step]
    return chain


def walk(record: Any, chain: Sequence[str]) -> Any:
    for attr in chain:
        if record is None:
            return None
        record = getattr(record, attr)
    return record
