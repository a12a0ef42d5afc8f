"""kafka-python (pure Python, its own protocol code) against the Precursor Kafka gateway:
create a topic with the admin client, produce with acks=all, consume in a group, commit,
and check that a second consumer of the group starts at the committed offsets.

usage: kafka_python.py BOOTSTRAP TOPIC MESSAGES
Prints one JSON object.
"""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kp-admin")
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        result["create_again"] = "accepted"
    except Exception as error:  # TopicAlreadyExistsError
        result["create_again"] = type(error).__name__

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             key_serializer=str.encode, value_serializer=str.encode)
    base_ms = 1_700_000_000_000
    futures = [producer.send(topic, key=f"k{i % 10}", value=f"v{i}", timestamp_ms=base_ms + i)
               for i in range(count)]
    producer.flush()
    records = [f.get(timeout=30) for f in futures]
    producer.close()
    result["produced"] = len(records)
    result["produced_distinct_offsets"] = len({(r.partition, r.offset) for r in records})

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="kp-group",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             value_deserializer=bytes.decode)
    values, deadline = [], time.time() + 60
    while len(values) < count and time.time() < deadline:
        for batch in consumer.poll(timeout_ms=1000).values():
            values.extend(r.value for r in batch)
    consumer.commit()
    partitions = sorted(consumer.partitions_for_topic(topic))
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    # ListOffsets by timestamp: the first offset of each partition at or after the target.
    target = base_ms + count // 2
    found = consumer.offsets_for_times({TopicPartition(topic, p): target for p in partitions})
    expected = {}
    for i, record in enumerate(records):
        if base_ms + i >= target:
            expected[record.partition] = min(expected.get(record.partition, record.offset),
                                              record.offset)
    result["offsets_for_times_right"] = all(
        (found[TopicPartition(topic, p)].offset if found[TopicPartition(topic, p)] else None)
        == expected.get(p) for p in partitions)
    late = consumer.offsets_for_times({TopicPartition(topic, p): base_ms + 10 * count
                                       for p in partitions})
    result["offsets_for_times_none_after_end"] = all(v is None for v in late.values())
    early = consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions])
    result["beginning_is_zero"] = all(v == 0 for v in early.values())
    consumer.close()
    result["consumed"] = len(values)
    result["consumed_distinct"] = len(set(values))
    result["missing"] = len({f"v{i}" for i in range(count)} - set(values))
    result["committed_is_end"] = all(committed[p] == ends[TopicPartition(topic, p)] for p in partitions)

    again = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="kp-group",
                          auto_offset_reset="earliest", enable_auto_commit=False)
    extra, deadline = 0, time.time() + 5
    while time.time() < deadline:
        for batch in again.poll(timeout_ms=500).values():
            extra += len(batch)
    positions = {p: again.position(TopicPartition(topic, p)) for p in partitions}
    again.close()
    result["second_consumer_extra"] = extra
    result["second_consumer_at_committed"] = all(positions[p] == committed[p] for p in partitions)

    groups = [g[0] for g in admin.list_consumer_groups()]
    result["groups_listed"] = "kp-group" in groups
    described = admin.describe_consumer_groups(["kp-group"])[0]
    result["described_state"] = described.state
    offsets = admin.list_consumer_group_offsets("kp-group")
    result["admin_offsets_committed"] = sum(o.offset for o in offsets.values()) == count
    admin.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
