"""A consumer group member that commits a fixed offset per partition, then stays in the
group without committing more (librdkafka through confluent-kafka).

usage: lag_consumer.py BOOTSTRAP GROUP TOPIC PARTITIONS COMMIT_OFFSET CLIENT_ID
Reads each of the PARTITIONS partitions of TOPIC from the beginning until it has seen
offset COMMIT_OFFSET - 1, commits COMMIT_OFFSET for it synchronously and pauses it; prints
    COMMITTED <partition> <offset>
per partition, then DONE, then keeps polling (heartbeats, membership) until SIGTERM, when
it leaves the group and prints CLOSED.
"""
import signal
import sys

from confluent_kafka import Consumer, TopicPartition

stopping = False


def on_term(*_):
    global stopping
    stopping = True


def say(line):
    print(line, flush=True)


def main():
    bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    partitions, commit_offset, client_id = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": client_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    })
    consumer.subscribe([topic])
    committed = set()
    done = False
    while not stopping:
        for message in consumer.consume(100, 0.2):
            if message.error():
                say(f"ERROR {message.error()}")
                continue
            partition = message.partition()
            if partition in committed or message.offset() < commit_offset - 1:
                continue
            point = TopicPartition(topic, partition, commit_offset)
            consumer.commit(offsets=[point], asynchronous=False)
            consumer.pause([point])
            committed.add(partition)
            say(f"COMMITTED {partition} {commit_offset}")
        if not done and len(committed) == partitions:
            done = True
            say("DONE")
    consumer.close()
    say("CLOSED")


if __name__ == "__main__":
    main()
