"""One member of a consumer group (librdkafka through confluent-kafka).

usage: group_member.py BOOTSTRAP GROUP TOPIC [ASSIGNOR]
Consumes, commits synchronously after every batch, and only then prints each message:
    MSG <partition> <offset> <value>
plus ASSIGNED <p,p,...> / REVOKED <p,...> on rebalances, COMMIT_ERROR <why> (the batch is
sought back and read again), ERROR <why>. SIGTERM: close (leave the group), print CLOSED.
"""
import signal
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition

stopping = False


def on_term(*_):
    global stopping
    stopping = True


def say(line):
    print(line, flush=True)


def main():
    bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    assignor = sys.argv[4] if len(sys.argv) > 4 else "range"
    signal.signal(signal.SIGTERM, on_term)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": assignor,
    })

    def on_assign(_, partitions):
        say("ASSIGNED " + ",".join(str(p.partition) for p in sorted(partitions, key=lambda p: p.partition)))

    def on_revoke(_, partitions):
        say("REVOKED " + ",".join(str(p.partition) for p in sorted(partitions, key=lambda p: p.partition)))

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stopping:
        messages = consumer.consume(500, 0.2)
        good = []
        for message in messages:
            if message.error():
                say(f"ERROR {message.error()}")
            else:
                good.append(message)
        if not good:
            continue
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as error:
            say(f"COMMIT_ERROR {error}")
            first = {}
            for message in good:
                first.setdefault(message.partition(), message.offset())
            for partition, offset in first.items():
                try:
                    consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException:
                    pass  # no longer ours: its new owner starts at the committed offset
            continue
        for message in good:
            say(f"MSG {message.partition()} {message.offset()} {message.value().decode()}")
    consumer.close()
    say("CLOSED")


if __name__ == "__main__":
    main()
