"""Replay on two cores: the source in this process, its rollup in a child process.

The child is sent what a worker's metrics stage is sent by its join stage (`monitor.stream.wire`):
each drain's parts and early parts, then the watermark, in the order they were drained. It merges
them into a `Rollup` exactly as `Monitor.drain` does in one process, so the report is the same byte
for byte: msgpack keeps every float exact, and the merges happen in the same order. The join, about
two thirds of a replay's work, overlaps with the windows, metrics and tests of the rollup.

The child is forked, so it starts without importing anything again and needs nothing pickled.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from monitor.apps.gcpause import paused_gc
from monitor.contract.spec import Spec
from monitor.engine.rollup import Rollup, Sections
from monitor.engine.source import EarlyPart, Part
from monitor.stream import wire

_END = b""  # no more drains: send back the sections


def available() -> bool:
    """Whether this machine can run the rollup beside the source: two cores, and processes that fork."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores >= 2 and sys.platform == "linux"


class RollupProcess:
    """A `Rollup` in a child process, fed one drain at a time through a pipe (a `monitor.engine.monitor.Sink`)."""

    def __init__(self, spec: Spec, replay_source: str) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._child = context.Process(target=_serve, args=(theirs, spec, replay_source), name="monitor-rollup",
                                      daemon=True)  # daemon: it never outlives this process
        self._child.start()
        theirs.close()
        self._seq = 0
        self._sections: Sections | None = None

    def take(self, parts: list[Part], early: list[EarlyPart], watermark: float) -> None:
        delta = wire.Delta(0, self._seq, watermark, [wire.SlicePart.of(p) for p in parts],
                           [wire.EarlySlice.of(e) for e in early])
        self._seq += 1
        try:
            self._pipe.send_bytes(wire.encode(delta))
        except (BrokenPipeError, ConnectionResetError):
            raise self._failure() from None

    def sections(self) -> Sections:
        """End of input: the child's report sections; the child then exits."""
        if self._sections is None:
            try:
                self._pipe.send_bytes(_END)
                found: tuple[str, Any] = self._pipe.recv()
            except (BrokenPipeError, ConnectionResetError, EOFError):
                raise self._failure() from None
            kind, value = found
            if kind != "sections":
                raise RuntimeError(f"the rollup process failed:\n{value}")
            self._sections = value
            self.close()
        return self._sections

    def close(self) -> None:
        """Stop the child, whether or not it has finished (after an error here, it has not)."""
        self._pipe.close()
        self._child.join(timeout=5)
        if self._child.is_alive():
            self._child.kill()
            self._child.join()

    def _failure(self) -> RuntimeError:
        """What the child said before it stopped reading, or how it ended."""
        try:
            if self._pipe.poll(5):
                _, said = self._pipe.recv()
                return RuntimeError(f"the rollup process failed:\n{said}")
        except (EOFError, OSError):
            pass
        self._child.join(timeout=5)
        return RuntimeError(f"the rollup process ended unexpectedly (exit code {self._child.exitcode})")


def _serve(pipe: Connection, spec: Spec, replay_source: str) -> None:
    """The child: merge each drain as it comes; at the end, send back the report's sections."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pipe
    try:
        rollup = Rollup(spec, replay_source, overall=True)
        with paused_gc():
            while (raw := pipe.recv_bytes()) != _END:
                delta = wire.delta(raw)
                rollup.take([p.part(spec.shape) for p in delta.parts], [e.part() for e in delta.early],
                             delta.watermark)
            found = rollup.sections()
        pipe.send(("sections", found))
    except EOFError:  # the parent stopped (an error, or Ctrl-C): nothing to send back
        pass
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()
