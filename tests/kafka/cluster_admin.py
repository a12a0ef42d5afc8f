"""DescribeCluster and ElectLeaders through confluent-kafka's AdminClient (librdkafka 2.16).

usage: cluster_admin.py BOOTSTRAP TOPIC PARTITIONS
Prints one JSON line: {"cluster_id", "controller", "brokers": [ids],
"preferred": {partition: error name or null}, "unclean": {...}}. An election's error is
the KafkaError's name (ELECTION_NOT_NEEDED, ...); null is a done election.
"""
import json
import sys

from confluent_kafka import ElectionType, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

TIMEOUT_S = 30


def elect(admin, kind, topic, partitions):
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    # No timeout keywords: 2.16's binding fails on them (SystemError in its argument parsing).
    future = admin.elect_leaders(kind, wanted)
    try:
        result = future.result(timeout=TIMEOUT_S)
    except KafkaException as error:
        return {"request_error": error.args[0].name()}
    answers = {}
    for tp, error in result.items():
        answers[tp.partition] = None if error is None else error.name()
    return answers


def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    cluster = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    out = {
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller.id if cluster.controller else None,
        "brokers": sorted(node.id for node in cluster.nodes),
        "preferred": elect(admin, ElectionType.PREFERRED, topic, partitions),
        "unclean": elect(admin, ElectionType.UNCLEAN, topic, partitions),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
