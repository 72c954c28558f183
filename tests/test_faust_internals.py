"""The Faust and aiokafka internals that agents/consumer.py relies on: an upgrade that changes them fails here."""

from __future__ import annotations

import asyncio
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


def test_aiokafka_keeps_fetch_positions_where_the_rewind_reads_them() -> None:
    # Consumer._seek_back reads a partition's fetch position to rewind a dropped batch, never forward.
    from aiokafka.consumer.consumer import AIOKafkaConsumer
    from aiokafka.consumer.subscription_state import Assignment, Subscription, SubscriptionState, TopicPartitionState

    assert "self._subscription = SubscriptionState(" in inspect.getsource(AIOKafkaConsumer.__init__)
    assert isinstance(SubscriptionState.subscription, property) and isinstance(Subscription.assignment, property)
    assert callable(Assignment.state_value)
    assert {"has_valid_position", "position"} <= set(dir(TopicPartitionState))


def test_the_worker_transport_makes_the_fixed_consumer() -> None:
    assert issubclass(Transport, driver.Transport) and Transport.Consumer is Consumer
    assert issubclass(Consumer, driver.Consumer)


def test_faust_fetches_through_wait_next_records_and_reads_the_generation_after_it() -> None:
    # Batch intake takes its records off `_wait_next_records`; Faust reads the generation only after
    # that returns, which is why the intake drops what a rebalance during it made stale.
    source = inspect.getsource(faust_consumer.Consumer.getmany)
    assert source.index("await self._wait_next_records(timeout)") < source.index("self.app.consumer_generation_id")
    assert "tp in active_partitions" in source and "self._buffered_partitions" in source


def test_faust_commits_what_new_offset_returns_for_partitions_with_ack_lists() -> None:
    # commit_through feeds `_new_offset`, and touches `_acked[tp]` so the commit loop visits tp.
    assert "self._new_offset(tp)" in inspect.getsource(faust_consumer.Consumer._filter_committable_offsets)
    assert "for tp in self._acked" in inspect.getsource(faust_consumer.Consumer._filter_tps_with_pending_acks)
    assert "self._acked = defaultdict(list)" in inspect.getsource(faust_consumer.Consumer.__init__)
    assert "tp in assignment" in inspect.getsource(faust_consumer.Consumer._commit_offsets)


def test_faust_stall_detector_reads_the_inbound_time_the_intake_sets() -> None:
    assert "monitor.stream_inbound_time.get(tp)" in inspect.getsource(driver.AIOKafkaConsumerThread.verify_event_path)


def test_the_worker_consumer_asks_the_broker_for_a_short_fetch_wait() -> None:
    # Faust builds aiokafka's consumer with fetch_max_wait_ms=1500 and no setting; the thread sets
    # the attribute aiokafka reads when the consumer starts. Building it opens no connection.
    import faust
    from aiokafka.consumer.consumer import AIOKafkaConsumer

    from agents.consumer import FETCH_MAX_WAIT_MS, ConsumerThread

    assert "fetch_max_wait_ms=1500" in inspect.getsource(driver.AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)

    async def build() -> AIOKafkaConsumer:  # aiokafka builds its client only inside a running loop
        app = faust.App("fetch-wait-check", broker="kafka://127.0.0.1:9", autodiscover=False)
        app.transport = Transport(app.conf.broker_consumer, app)
        consumer = app.consumer
        assert isinstance(consumer, Consumer)
        thread = consumer._new_consumer_thread()
        assert isinstance(thread, ConsumerThread)
        made: AIOKafkaConsumer = thread._create_worker_consumer(app.transport)
        await made._client.close()
        return made

    assert asyncio.run(build())._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
    from aiokafka.consumer import fetcher

    from agents.consumer import IntakeRecords
    assert fetcher.PartitionRecords is IntakeRecords  # installed by the same thread method


def test_aiokafka_makes_each_partitions_records_by_the_name_the_consumer_thread_replaces() -> None:
    # The thread sets `fetcher.PartitionRecords`; the fetcher must look the name up when it builds one,
    # and wrap every record through `_consumer_record`, the method `IntakeRecords` overrides.
    from aiokafka.consumer import fetcher

    assert "partition_records = PartitionRecords(" in inspect.getsource(fetcher.Fetcher._proc_fetch_request)
    assert "self._consumer_record(tp, record)" in inspect.getsource(fetcher.PartitionRecords._unpack_records)


def test_intake_topics_get_the_records_as_parsed_and_every_other_topic_consumer_records() -> None:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import ConsumerRecord, TopicPartition

    from agents.consumer import IntakeRecords

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for offset in range(3):
        builder.append(offset, timestamp=1_000 + offset, key=b"k%d" % offset, value=b"v%d" % offset, headers=[])
    batch = bytes(builder.build())
    topics = IntakeRecords.raw_topics
    IntakeRecords.raw_topics = {"intake"}
    try:
        # from offset 1, as after a seek into the batch: the records before it are skipped either way
        made = {topic: list(IntakeRecords(TopicPartition(topic, 0), MemoryRecords(batch), [], 1, None, None, True, 0))
                for topic in ("intake", "other")}
    finally:
        IntakeRecords.raw_topics = topics
    assert not isinstance(made["intake"][0], ConsumerRecord)
    assert all(isinstance(record, ConsumerRecord) for record in made["other"])
    for records in made.values():
        assert [(r.offset, r.key, r.value, r.timestamp) for r in records] == [(1, b"k1", b"v1", 1_001),
                                                                            (2, b"k2", b"v2", 1_002)]


def test_faust_recovery_resumes_from_the_offsets_the_worker_forgets() -> None:
    # `ChangelogTable.forget` drops a revoked partition's keys from the memory store and these offsets, so
    # that Faust reads its changelog from the start when it comes back (`_add` sets None: from the start).
    from faust.stores.memory import Store
    from faust.tables.recovery import Recovery

    source = inspect.getsource(Recovery._add)
    assert "offsets.setdefault(tp, None)" in source and "persisted_offset" in source
    assert "self.active_offsets" in inspect.getsource(Recovery.add_active)
    assert "self.standby_offsets" in inspect.getsource(Recovery.add_standby)
    assert Store.persisted_offset(Store.__new__(Store), None) is None  # type: ignore[arg-type]  # memory: none kept


def test_a_revoked_partition_is_forgotten_with_its_early_state() -> None:
    from types import SimpleNamespace

    from faust.types import TP

    from agents.app import ChangelogTable

    data = {b"2|5|b": b"1", b"e2|5|s": b"2", b"12|5|b": b"3", b"3|5|b": b"4", b"e3|5|s": b"5"}
    table = SimpleNamespace(data=dict(data), changelog_topic=SimpleNamespace(get_topic_name=lambda: "metrics"))
    recovery = SimpleNamespace(active_offsets={TP("metrics", 2): 40, TP("metrics", 3): 7},
                               standby_offsets={TP("metrics", 2): 40})
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery))
    ChangelogTable(table).forget(app, {2}, "|", ("", "e"))  # type: ignore[arg-type]
    assert table.data == {b"12|5|b": b"3", b"3|5|b": b"4", b"e3|5|s": b"5"}
    assert recovery.active_offsets == {TP("metrics", 3): 7} and recovery.standby_offsets == {}


def test_faust_drops_messages_below_its_read_offset_and_would_count_skipped_ones_as_acked() -> None:
    # Why Consumer.rewind resets `_read_offset` and Consumer._add_gap counts nothing: a message below the read
    # offset is dropped, and the offsets jumped over become a gap that `_new_offset` treats as acked.
    drain = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert "offset >= r_offset" in drain and "await self._add_gap(tp, r_offset + 1, offset)" in drain
    assert "self._gap[tp]" in inspect.getsource(faust_consumer.Consumer._new_offset)
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    assert "self._read_offset = defaultdict(lambda: None)" in init and "self._committed_offset" in init
    assert Consumer._add_gap is not faust_consumer.Consumer._add_gap
    assert asyncio.run(Consumer._add_gap(object(), object(), 1, 5)) is None  # type: ignore[arg-type]
