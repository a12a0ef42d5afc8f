"""A librdkafka consumer (confluent-kafka) in a group that keeps reading a topic while
its partition leader changes, committing after every batch.

usage: follow_leader.py BOOTSTRAP GROUP TOPIC TOTAL
Prints MSG <partition> <offset> <value> for each message (after its commit), ERROR <why>
for errors, and when TOTAL messages were read (or after 120 s without one) one line
DONE {"read": n, "librdkafka": version} and exits.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, libversion

IDLE_LIMIT_S = 120


def say(line):
    print(line, flush=True)


def main():
    bootstrap, group, topic, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 500,
        # Metadata is asked again soon after a leader change: the default backoff
        # (100 ms .. 10 s) only slows the test down.
        "topic.metadata.refresh.interval.ms": 1000,
    })
    consumer.subscribe([topic])
    read, last_message = 0, time.monotonic()
    while read < total and time.monotonic() - last_message < IDLE_LIMIT_S:
        messages = consumer.consume(500, 0.2)
        good = []
        for message in messages:
            if message.error():
                say(f"ERROR {message.error()}")
            else:
                good.append(message)
        if not good:
            continue
        last_message = time.monotonic()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as error:
            say(f"ERROR commit: {error}")
        for message in good:
            say(f"MSG {message.partition()} {message.offset()} {message.value().decode()}")
        read += len(good)
    consumer.close()
    say("DONE " + json.dumps({"read": read, "librdkafka": libversion()[0]}))


if __name__ == "__main__":
    main()
