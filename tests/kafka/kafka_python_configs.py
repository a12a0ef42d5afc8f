"""DescribeConfigs through kafka-python's KafkaAdminClient (Debian's python3-kafka).

usage: kafka_python_configs.py BOOTSTRAP TOPIC
Prints one JSON line: {"topic": {name: value}, "broker": {name: value}}.
"""
import json
import sys

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient


def configs_of(response):
    (resource,) = response.resources
    error_code, error_message, _type, _name, entries = resource[:5]
    assert error_code == 0, (error_code, error_message)
    return {entry[0]: entry[1] for entry in entries}


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    (topic_response,) = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    broker_id = str(admin._client.cluster.brokers().pop().nodeId)
    (broker_response,) = admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, broker_id)]
    )
    print(
        json.dumps(
            {
                "version": topic_response.API_VERSION,
                "topic": configs_of(topic_response),
                "broker": configs_of(broker_response),
            }
        ),
        flush=True,
    )
    admin.close()


if __name__ == "__main__":
    main()
