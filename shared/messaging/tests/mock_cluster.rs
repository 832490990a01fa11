//! Publish outcome mapping against librdkafka's in-process mock cluster, where broker faults can be
//! injected. The real-broker behaviour is covered by `kafka_broker.rs`.

#![cfg(test)]

mod common;

use common::envelope;
use corebank_messaging::{EventPublisher, KafkaConfig, KafkaPublisher, PublishError, Topics};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "mock.account-events";

fn publisher_for(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    timeout_ms: u64,
) -> KafkaPublisher {
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    let mut config = KafkaConfig::new(cluster.bootstrap_servers());
    config.message_timeout_ms = timeout_ms;
    KafkaPublisher::new(&config, Topics::single(TOPIC)).unwrap()
}

#[tokio::test]
async fn a_broker_refusing_a_message_as_too_large_gives_that_event_a_permanent_error() {
    let cluster = MockCluster::new(1).unwrap();
    let publisher = publisher_for(&cluster, 10_000);
    // Warm up so the refusal hits a produce request, not the metadata exchange.
    let warm_up = publisher.publish(&[envelope("account-a", 1)]).await;
    assert!(warm_up[0].is_ok(), "{warm_up:?}");

    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let outcomes = publisher.publish(&[envelope("account-a", 2)]).await;

    assert_eq!(outcomes.len(), 1);
    match &outcomes[0] {
        Err(err @ PublishError::Rejected { .. }) => assert!(!err.is_retryable()),
        other => panic!("expected a permanent rejection, got {other:?}"),
    }
    assert!(publisher.publish(&[envelope("account-a", 3)]).await[0].is_ok(), "the next event goes through");
}

#[tokio::test]
async fn transient_broker_errors_are_retried_inside_the_producer_and_end_acknowledged() {
    let cluster = MockCluster::new(1).unwrap();
    let publisher = publisher_for(&cluster, 10_000);
    let warm_up = publisher.publish(&[envelope("account-a", 1)]).await;
    assert!(warm_up[0].is_ok(), "{warm_up:?}");

    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let events: Vec<_> = (2..=6).map(|v| envelope("account-a", v)).collect();
    let outcomes = publisher.publish(&events).await;

    assert_eq!(outcomes.len(), 5);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}

#[tokio::test]
async fn an_unreachable_broker_makes_every_event_a_retryable_timeout() {
    let cluster = MockCluster::new(1).unwrap();
    let publisher = publisher_for(&cluster, 500);
    cluster.broker_down(1).unwrap();

    let events = vec![envelope("account-a", 1), envelope("account-b", 1), envelope("account-a", 2)];
    let outcomes = publisher.publish(&events).await;

    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        match outcome {
            Err(err @ PublishError::Transient { reason }) => {
                assert!(err.is_retryable());
                assert!(reason.contains("timed out"), "{reason}");
            }
            other => panic!("expected a retryable failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_producer_fenced_by_the_broker_is_replaced_and_the_events_it_failed_go_out_on_the_next_try() {
    let cluster = MockCluster::new(1).unwrap();
    let publisher = publisher_for(&cluster, 10_000);
    let warm_up = publisher.publish(&[envelope("account-a", 1)]).await;
    assert!(warm_up[0].is_ok(), "{warm_up:?}");

    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let fenced = publisher.publish(&[envelope("account-a", 2)]).await;
    match &fenced[0] {
        Err(err) => assert!(err.is_retryable(), "a fenced producer's failure is retryable: {err:?}"),
        Ok(()) => panic!("the fenced produce request cannot have been acknowledged"),
    }
    assert!(publisher.needs_new_producer(), "a fenced producer is marked for renewal");

    // The next publish builds a new producer: the same event, then later ones, go out.
    let retried = publisher.publish(&[envelope("account-a", 2), envelope("account-a", 3)]).await;
    assert!(retried.iter().all(Result::is_ok), "{retried:?}");
    assert!(!publisher.needs_new_producer());
}
