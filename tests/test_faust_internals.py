"""The Faust and aiokafka internals that agents/consumer.py relies on: an upgrade that changes them fails here."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver

from agents.consumer import Consumer, Transport


def test_faust_is_the_pinned_version() -> None:
    assert version("faust-streaming") == "0.15.3"


def test_faust_seeks_stream_partitions_through_seek_to_committed() -> None:
    # After recovery Faust calls perform_seek, which must go through the method the fix overrides.
    assert "self.seek_to_committed()" in inspect.getsource(faust_consumer.Consumer.perform_seek)


def test_aiokafka_still_leaves_uncommitted_partitions_where_they_were() -> None:
    # The reason for the fix: a committed offset of None or 0 is not sought. If aiokafka changes
    # this, the override is harmless, but this note and the override should then go.
    from aiokafka.consumer.consumer import AIOKafkaConsumer

    assert "if offset and offset > 0:" in inspect.getsource(AIOKafkaConsumer.seek_to_committed)


def test_the_worker_transport_makes_the_fixed_consumer() -> None:
    assert issubclass(Transport, driver.Transport) and Transport.Consumer is Consumer
    assert issubclass(Consumer, driver.Consumer)
