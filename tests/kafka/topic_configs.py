"""Topic configurations through confluent-kafka's AdminClient (librdkafka 2.16):
CreateTopics with configs, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, and
max.message.bytes / compression.type in force on produce.

usage: topic_configs.py BOOTSTRAP PHASE
  PHASE "alter":   creates cfg-limit (max.message.bytes=4096) and cfg-zstd
                   (compression.type=zstd), checks every answer, produces to both.
  PHASE "restart": after a broker restart: the configurations are still there.
Prints one JSON line of what it saw; exits non-zero (AssertionError) on the first surprise.
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)

TIMEOUT_S = 30
LIMIT = 4096
ZSTD_MESSAGES = 2000


def one(futures):
    """The result of the one future of an admin call (or its KafkaError)."""
    (future,) = futures.values()
    try:
        return future.result(timeout=TIMEOUT_S), None
    except KafkaException as error:
        return None, error.args[0]


def describe(admin, kind, name):
    result, error = one(admin.describe_configs([ConfigResource(kind, name)]))
    assert error is None, f"describe {name}: {error}"
    return result


def produce(bootstrap, topic, values, compression="none", idempotent=False):
    """Produces `values`; returns (delivered, [error names])."""
    errors, delivered = [], []

    def report(error, message):
        if error is None:
            delivered.append(message.offset())
        else:
            errors.append(error.name())

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": compression,
            "linger.ms": 5,
            "enable.idempotence": idempotent,
            "message.send.max.retries": 3,
        }
    )
    for value in values:
        producer.produce(topic, value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0, "unflushed messages"
    return len(delivered), errors


def consume(bootstrap, topic, count):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values = []
    for _ in range(600):
        if len(values) >= count:
            break
        for message in consumer.consume(1000, timeout=0.5):
            assert message.error() is None, message.error()
            values.append(message.value())
    consumer.close()
    return values


def check_bad_values(admin, out):
    """Bad values and keys: INVALID_CONFIG with a message naming the key."""
    resource = "cfg-limit"
    cases = [
        ("retention.ms", "abc"),
        ("compression.type", "brotli"),
        ("no.such.key", "1"),
        ("cleanup.policy", "compact"),
        ("max.message.bytes", str(1 << 30)),
    ]
    seen = {}
    for key, value in cases:
        entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        _, error = one(
            admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, resource, incremental_configs=[entry])])
        )
        assert error is not None, f"{key}={value} was taken"
        assert error.code() == KafkaError.INVALID_CONFIG, f"{key}={value}: {error}"
        assert key in error.str(), f"{key}={value}: message {error.str()!r}"
        seen[key] = error.str()
    # A topic created with a bad configuration is refused whole.
    futures = admin.create_topics([NewTopic("cfg-bad", 1, config={"compression.type": "brotli"})])
    _, error = one(futures)
    assert error is not None and error.code() == KafkaError.INVALID_CONFIG, error
    seen["create"] = error.str()
    # APPEND on a key that is not a list.
    entry = ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND)
    _, error = one(
        admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, resource, incremental_configs=[entry])])
    )
    assert error is not None and error.code() == KafkaError.INVALID_REQUEST, error
    # An unknown topic.
    _, error = one(admin.describe_configs([ConfigResource(ResourceType.TOPIC, "cfg-nope")]))
    assert error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, error
    out["bad"] = seen


def check_broker(admin, out):
    broker_id = str(next(iter(admin.list_topics(timeout=TIMEOUT_S).brokers)))
    configs = describe(admin, ResourceType.BROKER, broker_id)
    assert configs["message.max.bytes"].value == "1048588", configs["message.max.bytes"]
    assert all(c.is_read_only for c in configs.values()), "broker configs are read-only"
    assert configs["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    entry = ConfigEntry("num.partitions", "9", incremental_operation=AlterConfigOpType.SET)
    _, error = one(
        admin.incremental_alter_configs([ConfigResource(ResourceType.BROKER, broker_id, incremental_configs=[entry])])
    )
    assert error is not None and error.code() == KafkaError.INVALID_REQUEST, error
    out["broker"] = {name: c.value for name, c in configs.items()}


def phase_alter(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    out = {}
    futures = admin.create_topics(
        [
            NewTopic("cfg-limit", 2, config={"max.message.bytes": str(LIMIT), "retention.ms": "-1"}),
            NewTopic("cfg-zstd", 3, config={"compression.type": "zstd"}),
        ]
    )
    for topic, future in futures.items():
        future.result(timeout=TIMEOUT_S)
    configs = describe(admin, ResourceType.TOPIC, "cfg-limit")
    assert configs["max.message.bytes"].value == str(LIMIT), configs["max.message.bytes"]
    assert configs["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.ms"].value == "-1"
    assert configs["compression.type"].value == "producer"
    assert configs["compression.type"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["segment.bytes"].is_read_only
    assert not configs["max.message.bytes"].is_sensitive
    out["described"] = sorted(configs)

    # Over the limit: MSG_SIZE_TOO_LARGE; after raising it, delivered.
    big = [b"x" * (2 * LIMIT)]
    delivered, errors = produce(bootstrap, "cfg-limit", big)
    assert delivered == 0 and errors == ["MSG_SIZE_TOO_LARGE"], errors
    out["too_large"] = errors
    entry = ConfigEntry("max.message.bytes", str(1 << 20), incremental_operation=AlterConfigOpType.SET)
    _, error = one(
        admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, "cfg-limit", incremental_configs=[entry])])
    )
    assert error is None, error
    delivered, errors = produce(bootstrap, "cfg-limit", big)
    assert delivered == 1 and not errors, errors
    # validate_only changes nothing.
    entry = ConfigEntry("max.message.bytes", "100", incremental_operation=AlterConfigOpType.SET)
    _, error = one(
        admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, "cfg-limit", incremental_configs=[entry])], validate_only=True
        )
    )
    assert error is None, error
    assert describe(admin, ResourceType.TOPIC, "cfg-limit")["max.message.bytes"].value == str(1 << 20)
    # DELETE: the broker's default again.
    entry = ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)
    _, error = one(
        admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, "cfg-limit", incremental_configs=[entry])])
    )
    assert error is None, error
    configs = describe(admin, ResourceType.TOPIC, "cfg-limit")
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value, configs["retention.ms"]

    # AlterConfigs replaces the whole set: max.message.bytes goes back to the default.
    _, error = one(
        admin.alter_configs(
            [ConfigResource(ResourceType.TOPIC, "cfg-limit", set_config={"retention.bytes": "1073741824"})]
        )
    )
    assert error is None, error
    configs = describe(admin, ResourceType.TOPIC, "cfg-limit")
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.bytes"].value == "1073741824"
    # ... and the limit for the restart phase.
    entry = ConfigEntry("max.message.bytes", str(LIMIT), incremental_operation=AlterConfigOpType.SET)
    _, error = one(
        admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, "cfg-limit", incremental_configs=[entry])])
    )
    assert error is None, error

    check_bad_values(admin, out)
    check_broker(admin, out)

    # compression.type=zstd fed lz4 and uncompressed batches: read back identical.
    values = [f"record {i} {'y' * (i % 97)}".encode() for i in range(ZSTD_MESSAGES)]
    half = ZSTD_MESSAGES // 2
    delivered_lz4, errors = produce(bootstrap, "cfg-zstd", values[:half], "lz4", True)
    assert not errors, errors
    delivered_none, errors = produce(bootstrap, "cfg-zstd", values[half:], "none", True)
    assert not errors, errors
    read = consume(bootstrap, "cfg-zstd", ZSTD_MESSAGES)
    assert sorted(read) == sorted(values), f"read {len(read)} of {ZSTD_MESSAGES}"
    out["zstd"] = {"delivered": delivered_lz4 + delivered_none, "read": len(read)}
    print(json.dumps(out), flush=True)


def phase_restart(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = describe(admin, ResourceType.TOPIC, "cfg-limit")
    assert configs["max.message.bytes"].value == str(LIMIT), configs["max.message.bytes"]
    assert configs["retention.bytes"].value == "1073741824"
    assert describe(admin, ResourceType.TOPIC, "cfg-zstd")["compression.type"].value == "zstd"
    delivered, errors = produce(bootstrap, "cfg-limit", [b"x" * (2 * LIMIT)])
    assert errors == ["MSG_SIZE_TOO_LARGE"], errors
    print(json.dumps({"restart": "kept"}), flush=True)


if __name__ == "__main__":
    {"alter": phase_alter, "restart": phase_restart}[sys.argv[2]](sys.argv[1])
