"""CreatePartitions (API 37) with real clients: confluent-kafka's AdminClient (run it with
the venv's 2.16 or Debian's 2.0.2) or kafka-python's KafkaAdminClient, then a producer
writing to every partition and a consumer reading everything back.

usage: create_partitions.py confluent|kafka-python BOOTSTRAP TOPIC FROM TO
       create_partitions.py produce-all BOOTSTRAP TOPIC
TOPIC has FROM partitions; it is grown to TO. Bad requests first (each must leave FROM):
shrinking, the same count, an unknown topic, bad assignments, validate_only; then the grow
(confluent: with the assignment [[the broker]] per new partition, the one valid on a single
broker). produce-all only writes to and reads back every partition.
Prints one JSON line: {"errors": {case: Kafka error name or null}, "partitions": count
seen by Metadata, "consumed": {partition: messages}, "client": version}.
"""
import json
import socket
import struct
import sys
import time

TIMEOUT_S = 30
MESSAGES_PER_PARTITION = 20


def partition_count(list_topics, topic):
    return len(list_topics(topic).topics[topic].partitions)


def confluent_errors(bootstrap, topic, start, target, broker_id):
    from confluent_kafka import KafkaException, libversion
    from confluent_kafka.admin import AdminClient, NewPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def attempt(new_partitions, validate_only=False):
        futures = admin.create_partitions(
            [new_partitions], validate_only=validate_only, request_timeout=TIMEOUT_S
        )
        try:
            futures[new_partitions.topic].result(timeout=TIMEOUT_S)
            return None
        except KafkaException as error:
            return error.args[0].name()

    errors = {
        "shrink": attempt(NewPartitions(topic, start - 1)),
        "same": attempt(NewPartitions(topic, start)),
        "unknown_topic": attempt(NewPartitions(topic + "-nope", start + 1)),
        "unknown_broker": attempt(
            NewPartitions(topic, start + 1, replica_assignment=[[broker_id + 98]])
        ),
        "too_few_assignments": attempt(
            NewPartitions(topic, start + 2, replica_assignment=[[broker_id]])
        ),
        "too_many_partitions": attempt(NewPartitions(topic, 1025)),
        "validate_only": attempt(NewPartitions(topic, target), validate_only=True),
    }
    list_topics = lambda t: admin.list_topics(t, timeout=TIMEOUT_S)
    errors["count_after_bad_requests"] = partition_count(list_topics, topic)
    # The grow itself, with explicit assignments for the first new partition onwards: on
    # a single broker [[this broker]] per partition is the one valid assignment.
    assignment = [[broker_id]] * (target - start)
    errors["grow"] = attempt(NewPartitions(topic, target, replica_assignment=assignment))
    return errors, libversion()[0], list_topics


def kafka_python_errors(bootstrap, topic, start, target, _broker_id):
    import kafka
    from kafka.admin import KafkaAdminClient, NewPartitions
    from kafka.errors import KafkaError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)

    def attempt(count, name=topic, validate_only=False):
        try:
            response = admin.create_partitions(
                {name: NewPartitions(total_count=count)}, validate_only=validate_only
            )
        except KafkaError as error:
            return type(error).__name__
        # Older kafka-python returns the response instead of raising.
        for result in getattr(response, "topic_errors", []):
            code = result[1]
            if code != 0:
                return kafka.errors.for_code(code).__name__
        return None

    errors = {
        "shrink": attempt(start - 1),
        "same": attempt(start),
        "unknown_topic": attempt(start + 1, name=topic + "-nope"),
        "validate_only": attempt(target, validate_only=True),
    }
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap})
    list_topics = lambda t: metadata.list_topics(t, timeout=TIMEOUT_S)
    errors["count_after_bad_requests"] = partition_count(list_topics, topic)
    errors["grow"] = attempt(target)
    admin.close()
    return errors, kafka.__version__, list_topics


def raw_duplicate(bootstrap, topic, target):
    """CreatePartitions v0 naming the topic twice (no client sends that): both answers are
    INVALID_REQUEST (42) and nothing grows."""

    def string(text):
        raw = text.encode()
        return struct.pack(">h", len(raw)) + raw

    one = string(topic) + struct.pack(">i", target) + struct.pack(">i", -1)
    body = struct.pack(">i", 2) + one + one + struct.pack(">i", 10000) + b"\x00"
    request = struct.pack(">hhi", 37, 0, 7) + string("raw") + body
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as conn:
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", recv_exactly(conn, 4))[0]
        answer = recv_exactly(conn, size)
    # correlation id, throttle, results count, then name, error code, message.
    at = 4 + 4
    (count,) = struct.unpack_from(">i", answer, at)
    at += 4
    codes = []
    for _ in range(count):
        (name_len,) = struct.unpack_from(">h", answer, at)
        at += 2 + name_len
        (code,) = struct.unpack_from(">h", answer, at)
        at += 2
        (message_len,) = struct.unpack_from(">h", answer, at)
        at += 2 + max(message_len, 0)
        codes.append(code)
    return codes


def recv_exactly(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def produce_and_consume(bootstrap, topic, partitions):
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(str(error))

    for p in range(partitions):
        for i in range(MESSAGES_PER_PARTITION):
            producer.produce(topic, value=f"p{p}-{i}".encode(), partition=p, on_delivery=delivered)
    left = producer.flush(TIMEOUT_S)
    if left or failures:
        raise SystemExit(f"produce: {left} undelivered, failures {failures[:3]}")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    consumed = {p: [] for p in range(partitions)}
    deadline = time.time() + TIMEOUT_S
    # The partitions hold earlier messages too (the caller's): count what this run wrote.
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            if all(len(v) >= MESSAGES_PER_PARTITION for v in consumed.values()):
                break
            continue
        if message.error():
            continue
        value = message.value().decode()
        if value.startswith(f"p{message.partition()}-"):
            consumed[message.partition()].append(value)
    consumer.close()
    return {p: len(v) for p, v in consumed.items()}


def main():
    client, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=TIMEOUT_S)
    if client == "produce-all":
        seen = len(metadata.topics[topic].partitions)
        consumed = produce_and_consume(bootstrap, topic, seen)
        print(json.dumps({"partitions": seen, "consumed": consumed}), flush=True)
        return
    start, target = int(sys.argv[4]), int(sys.argv[5])
    broker_id = min(metadata.brokers)
    run = confluent_errors if client == "confluent" else kafka_python_errors
    errors, version, list_topics = run(bootstrap, topic, start, target, broker_id)
    duplicate = raw_duplicate(bootstrap, topic, target + 1)
    errors["duplicate"] = duplicate
    seen = partition_count(list_topics, topic)
    consumed = produce_and_consume(bootstrap, topic, seen)
    print(
        json.dumps(
            {"errors": errors, "partitions": seen, "consumed": consumed, "client": version}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
