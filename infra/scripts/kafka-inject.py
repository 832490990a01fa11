#!/usr/bin/env python3
"""Fault injection on the event topics, for infra/scripts/fault-soak.sh (kafka-python client).

  kafka-inject.py poison TOPIC...      one record per topic whose value is not an event envelope;
                                       prints {"topic","partition","offset"} per record, one JSON a line
  kafka-inject.py replay TOPIC COUNT   reads up to COUNT already-published records of each partition
                                       (from the start) and produces them again to the same partition,
                                       newest first: duplicates, out of order; prints {"topic","replayed"}

Brokers from KAFKA_BOOTSTRAP.
"""
import json
import os
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP"]
POISON = b"\xff\x00 fault-soak poison: not an event envelope \x00\xff"


def producer():
    return KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", retries=5, request_timeout_ms=30000)


def poison(topics):
    p = producer()
    for topic in topics:
        meta = p.send(topic, key=b"fault-soak-poison", value=POISON).get(timeout=60)
        print(json.dumps({"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}), flush=True)
    p.close()


def replay(topic, count):
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=5000)
    partitions = sorted(c.partitions_for_topic(topic) or [])
    p = producer()
    replayed = 0
    for part in partitions:
        tp = TopicPartition(topic, part)
        c.assign([tp])
        c.seek_to_beginning(tp)
        records = []
        for record in c:
            if record.value != POISON:
                records.append(record)
            if len(records) >= count:
                break
        for record in reversed(records):
            p.send(topic, key=record.key, value=record.value, partition=part,
                   headers=list(record.headers or [])).get(timeout=60)
            replayed += 1
    p.close()
    c.close()
    print(json.dumps({"topic": topic, "replayed": replayed}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "poison":
        poison(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "replay":
        replay(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
