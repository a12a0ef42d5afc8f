"""librdkafka (confluent-kafka) against the Precursor Kafka gateway: an idempotent
producer per codec (lz4, zstd, snappy, gzip), then a consumer reads everything back.

usage: idempotent_codecs.py BOOTSTRAP TOPIC MESSAGES_PER_CODEC
Prints one JSON object: per codec what was delivered, and what the consumer saw.
"""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition

CODECS = ["lz4", "zstd", "snappy", "gzip"]


def value(codec, i):
    return f"{codec}-{i}-" + "y" * (i % 200)


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = {}
    for codec in CODECS:
        producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": codec,
            "linger.ms": 5,
        })
        delivered, errors = [], []

        def report(error, message):
            if error is not None:
                errors.append(str(error))
            else:
                delivered.append((message.partition(), message.offset()))

        for i in range(count):
            while True:
                try:
                    producer.produce(topic, key=f"{codec}-{i % 100}", value=value(codec, i),
                                     on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        unflushed = producer.flush(60)
        result[codec] = {
            "delivered": len(delivered),
            "distinct_offsets": len(set(delivered)),
            "errors": errors[:5],
            "unflushed": unflushed,
        }

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "verify-codecs",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen, errors, idle = [], [], 0
    while idle < 10 and len(seen) < len(CODECS) * count:
        messages = consumer.consume(1000, 1.0)
        if not messages:
            idle += 1
            continue
        for message in messages:
            if message.error():
                errors.append(str(message.error()))
            else:
                seen.append(message.value().decode())
    consumer.close()
    expected = {value(c, i) for c in CODECS for i in range(count)}
    result["consumed"] = len(seen)
    result["consumed_distinct"] = len(set(seen))
    result["missing"] = len(expected - set(seen))
    result["unexpected"] = len(set(seen) - expected)
    result["consumer_errors"] = errors[:5]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
