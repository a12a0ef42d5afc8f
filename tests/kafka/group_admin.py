"""Deleting groups and committed offsets, and describing log dirs, as admin tools do.

usage: group_admin.py BOOTSTRAP TOPIC PARTITIONS

Needs the confluent-kafka 2.16 wheel (AdminClient.delete_consumer_groups, list/alter
consumer group offsets). OffsetDelete (47) and DescribeLogDirs (35), which the Python
bindings do not offer, are written by hand below from Kafka's message specs (both are
non-flexible versions: plain big-endian fields), so the broker's codec is checked by
an encoder it does not share.

Steps, each printed as one JSON line {"step": ..., ...}; the Rust test asserts on them:
  live      a consumer of group "live" committed and still in the group: DeleteGroups
            of it, of a group that does not exist and of "" answer per group;
            OffsetDelete of its subscribed topic is GROUP_SUBSCRIBED_TO_TOPIC.
  offsets   AlterConsumerGroupOffsets sets group "idle"'s offsets (no member), then
            OffsetDelete drops partition 0's (and answers an unknown partition), then
            ListConsumerGroupOffsets shows what is left.
  deleted   DeleteGroups of "idle" and of "live" after its consumer closed: both gone
            (their offsets too: a second DeleteGroups is GROUP_ID_NOT_FOUND).
  log_dirs  DescribeLogDirs v1 (all topics) and v4 (one partition of TOPIC).
"""
import json
import socket
import struct
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka import ConsumerGroupTopicPartitions

TIMEOUT_S = 30


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def group_results(admin, groups):
    """DeleteGroups: each group's error name, or null when deleted."""
    answers = {}
    for group, future in admin.delete_consumer_groups(groups, request_timeout=TIMEOUT_S).items():
        try:
            future.result(timeout=TIMEOUT_S)
            answers[group] = None
        except KafkaException as error:
            answers[group] = error.args[0].name()
    return answers


# --- Hand-written requests (Kafka's own message specs) ----------------------------------

def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def request(api_key, version, correlation_id, body, flexible=False):
    header = struct.pack(">hhi", api_key, version, correlation_id) + string("group_admin.py")
    if flexible:
        header += b"\x00"  # no tagged fields in the v2 header
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def exchange(bootstrap, frame):
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(frame)
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        return read_exactly(sock, size)


def read_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise RuntimeError("connection closed after %d of %d bytes" % (len(data), count))
        data += chunk
    return data


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        value = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value[0] if len(value) == 1 else value

    def string(self):
        size = self.take(">h")
        text = self.data[self.at:self.at + size].decode()
        self.at += size
        return text

    def uvarint(self):
        shift, value = 0, 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def compact_string(self):
        size = self.uvarint() - 1
        text = self.data[self.at:self.at + size].decode()
        self.at += size
        return text

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.at += self.uvarint()


def offset_delete(bootstrap, group, topic, partitions):
    """OffsetDelete v0: (top-level error, {partition: error code})."""
    body = string(group) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">i", p)
    r = Reader(exchange(bootstrap, request(47, 0, 4701, body)))
    assert r.take(">i") == 4701
    error, _throttle = r.take(">h"), r.take(">i")
    answers = {}
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            p, code = r.take(">i"), r.take(">h")
            answers[p] = code
    return error, answers


def describe_log_dirs_v1(bootstrap):
    """DescribeLogDirs v1, every topic: [{dir, error, {topic: {partition: size}}}]."""
    body = struct.pack(">i", -1)  # null: all topics
    r = Reader(exchange(bootstrap, request(35, 1, 3501, body)))
    assert r.take(">i") == 3501
    r.take(">i")  # throttle
    dirs = []
    for _ in range(r.take(">i")):
        error, log_dir = r.take(">h"), r.string()
        topics = {}
        for _ in range(r.take(">i")):
            name = r.string()
            sizes = {}
            for _ in range(r.take(">i")):
                p, size, _lag, _future = r.take(">i"), r.take(">q"), r.take(">q"), r.take(">?")
                sizes[p] = size
            topics[name] = sizes
        dirs.append({"dir": log_dir, "error": error, "topics": topics})
    return dirs


def describe_log_dirs_v4(bootstrap, topic, partition):
    """DescribeLogDirs v4 (flexible) for one partition: the same, with total/usable bytes."""
    name = topic.encode()
    body = b"\x02"  # compact array of one topic
    body += bytes([len(name) + 1]) + name  # compact string (short name)
    body += b"\x02" + struct.pack(">i", partition) + b"\x00"  # partitions, topic tags
    body += b"\x00"  # request tags
    r = Reader(exchange(bootstrap, request(35, 4, 3504, body, flexible=True)))
    assert r.take(">i") == 3504
    r.skip_tags()  # response header v1
    r.take(">i")  # throttle
    top_error = r.take(">h")
    dirs = []
    for _ in range(r.uvarint() - 1):
        error, log_dir = r.take(">h"), r.compact_string()
        topics = {}
        for _ in range(r.uvarint() - 1):
            t = r.compact_string()
            sizes = {}
            for _ in range(r.uvarint() - 1):
                p, size, _lag, _future = r.take(">i"), r.take(">q"), r.take(">q"), r.take(">?")
                r.skip_tags()
                sizes[p] = size
            r.skip_tags()
            topics[t] = sizes
        total, usable = r.take(">q"), r.take(">q")
        r.skip_tags()
        dirs.append({"dir": log_dir, "error": error, "topics": topics,
                     "total_bytes": total, "usable_bytes": usable})
    return {"error": top_error, "dirs": dirs}


def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap})

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "live", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    read = 0
    for _ in range(200):
        message = consumer.poll(0.25)
        if message is not None and message.error() is None:
            read += 1
        if read and consumer.assignment():
            break
    consumer.commit(asynchronous=False)
    deleted = group_results(admin, ["live", "no-such-group"])
    subscribed = offset_delete(bootstrap, "live", topic, [0])
    say("live", read=read, deleted=deleted, offset_delete=subscribed)

    offsets = [TopicPartition(topic, p, 5 + p) for p in range(partitions)]
    admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("idle", offsets)])["idle"].result(timeout=TIMEOUT_S)
    dropped = offset_delete(bootstrap, "idle", topic, [0, 999])
    unknown_group = offset_delete(bootstrap, "no-such-group", topic, [0])
    left = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("idle")])["idle"].result(timeout=TIMEOUT_S)
    say("offsets", offset_delete=dropped, unknown_group=unknown_group,
        left={tp.partition: tp.offset for tp in left.topic_partitions})

    consumer.close()
    first = group_results(admin, ["idle", "live"])
    second = group_results(admin, ["idle", "live"])
    listed = sorted(g.group_id for g in
                    admin.list_consumer_groups(request_timeout=TIMEOUT_S)
                    .result(timeout=TIMEOUT_S).valid)
    say("deleted", first=first, second=second, listed=listed)

    say("log_dirs", v1=describe_log_dirs_v1(bootstrap),
        v4=describe_log_dirs_v4(bootstrap, topic, 1))


if __name__ == "__main__":
    main()
