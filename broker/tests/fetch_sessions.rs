//! Incremental fetch sessions (KIP-227) over the wire, step by step.
//!
//! A full fetch opens a session; incremental fetches then name only what
//! changed and get only partitions with news; stale epochs, unknown ids and
//! forgotten partitions behave as Kafka clients expect; a final fetch
//! closes the session. Guards against a session that answers partitions
//! with nothing new (clients re-process nothing but waste the round trip),
//! loses a partition (a consumer silently stops reading it), or accepts a
//! replayed epoch (a client would skip or repeat records).

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use kafka_protocol::messages::{ApiKey, FetchResponse, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;

use common::{
    create_topic, one_record_batch, produce, produce_error, session_fetch, Broker, Connection,
};

const FETCH_VERSION: i16 = 12;
const TOPICS: [&str; 2] = ["session-a", "session-b"];

fn call(client: &mut Connection, request: &RequestKind) -> FetchResponse {
    let ResponseKind::Fetch(response) = client.call(ApiKey::Fetch, FETCH_VERSION, request) else {
        panic!("not a Fetch response");
    };
    response
}

/// The topics answered, with whether each brought records.
fn answered(response: &FetchResponse) -> Vec<(String, bool)> {
    response
        .responses
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                (
                    topic.topic.0.to_string(),
                    partition
                        .records
                        .as_ref()
                        .is_some_and(|records| !records.is_empty()),
                )
            })
        })
        .collect()
}

fn produce_one(client: &mut Connection, name: &str) {
    let response = client.call(
        ApiKey::Produce,
        9,
        &produce(name, 1, one_record_batch(b"value")),
    );
    assert_eq!(produce_error(&response).0, 0, "produce to {name}");
}

#[test]
fn incremental_fetches_carry_only_changes_and_news() {
    let broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    for name in TOPICS {
        let ResponseKind::CreateTopics(created) =
            client.call(ApiKey::CreateTopics, 5, &create_topic(name, &[]))
        else {
            panic!("not a CreateTopics response");
        };
        assert_eq!(created.topics[0].error_code, 0, "create {name}");
    }
    produce_one(&mut client, TOPICS[0]);

    let full = call(
        &mut client,
        &session_fetch(0, 0, &[(TOPICS[0], 0), (TOPICS[1], 0)], &[], 0),
    );
    assert_eq!(full.error_code, 0);
    let session = full.session_id;
    assert_ne!(session, 0, "an initial fetch opens a session");
    assert_eq!(
        answered(&full),
        [(TOPICS[0].to_owned(), true), (TOPICS[1].to_owned(), false)],
        "a full fetch answers every partition"
    );

    // The client moved past the record; nothing else happened.
    let quiet = call(
        &mut client,
        &session_fetch(session, 1, &[(TOPICS[0], 1)], &[], 100),
    );
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(answered(&quiet), [], "no partition has news");

    // New data in the partition the client did not mention this time.
    produce_one(&mut client, TOPICS[1]);
    let news = call(&mut client, &session_fetch(session, 2, &[], &[], 1_000));
    assert_eq!(answered(&news), [(TOPICS[1].to_owned(), true)]);

    let replayed = call(&mut client, &session_fetch(session, 2, &[], &[], 0));
    assert_eq!(
        replayed.error_code,
        ResponseError::InvalidFetchSessionEpoch.code()
    );
    assert!(replayed.responses.is_empty());
    let unknown = call(
        &mut client,
        &session_fetch(session ^ 0x4000, 1, &[], &[], 0),
    );
    assert_eq!(
        unknown.error_code,
        ResponseError::FetchSessionIdNotFound.code()
    );

    // A forgotten partition is neither read nor answered, even with data;
    // the session still serves the other one at the offset it remembers.
    produce_one(&mut client, TOPICS[1]);
    produce_one(&mut client, TOPICS[0]);
    let forgot = call(
        &mut client,
        &session_fetch(session, 3, &[], &[TOPICS[1]], 1_000),
    );
    assert_eq!(answered(&forgot), [(TOPICS[0].to_owned(), true)]);
    let records = forgot.responses[0].partitions[0].records.as_ref().unwrap();
    assert_eq!(
        i64::from_be_bytes(records[..8].try_into().unwrap()),
        1,
        "read from the offset the session remembers"
    );

    let closed = call(
        &mut client,
        &session_fetch(session, -1, &[(TOPICS[0], 2)], &[], 0),
    );
    assert_eq!((closed.error_code, closed.session_id), (0, 0));
    let gone = call(&mut client, &session_fetch(session, 4, &[], &[], 0));
    assert_eq!(
        gone.error_code,
        ResponseError::FetchSessionIdNotFound.code()
    );
}

/// Guards the response budget now that a Fetch reads its partitions
/// concurrently: the records of all partitions stay within `max_bytes`
/// (bar the first batch, KIP-74), partitions come back in request order,
/// and with room for everything every partition is served whole.
#[test]
fn concurrent_partition_reads_keep_the_response_budget() {
    const BATCH_VALUE_BYTES: usize = 1_000;
    let broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    let names: Vec<String> = (0..4).map(|index| format!("budget-{index}")).collect();
    for name in &names {
        let ResponseKind::CreateTopics(created) =
            client.call(ApiKey::CreateTopics, 5, &create_topic(name, &[]))
        else {
            panic!("not a CreateTopics response");
        };
        assert_eq!(created.topics[0].error_code, 0, "create {name}");
        for _ in 0..10 {
            let response = client.call(
                ApiKey::Produce,
                9,
                &produce(name, 1, one_record_batch(&[b'v'; BATCH_VALUE_BYTES])),
            );
            assert_eq!(produce_error(&response).0, 0, "produce to {name}");
        }
    }
    let partitions: Vec<(&str, i64)> = names.iter().map(|name| (name.as_str(), 0)).collect();
    let records_bytes = |response: &FetchResponse| -> Vec<usize> {
        response
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .map(|partition| partition.records.as_ref().map_or(0, bytes::Bytes::len))
            .collect()
    };
    for max_bytes in [1, 2_500, 9_000] {
        let RequestKind::Fetch(request) = session_fetch(0, -1, &partitions, &[], 0) else {
            unreachable!()
        };
        let limited = call(
            &mut client,
            &RequestKind::Fetch(request.with_max_bytes(max_bytes)),
        );
        let order: Vec<String> = limited
            .responses
            .iter()
            .map(|topic| topic.topic.0.to_string())
            .collect();
        assert_eq!(order, names, "answers in request order");
        let sizes = records_bytes(&limited);
        let batch_bytes = sizes[0];
        assert!(
            batch_bytes > BATCH_VALUE_BYTES,
            "the first partition gets a batch: {sizes:?}"
        );
        let allowed = usize::try_from(max_bytes).unwrap().max(batch_bytes);
        assert!(
            sizes.iter().sum::<usize>() <= allowed,
            "max_bytes {max_bytes}: {sizes:?}"
        );
    }
    let everything = call(&mut client, &session_fetch(0, -1, &partitions, &[], 0));
    let sizes = records_bytes(&everything);
    assert!(
        sizes
            .iter()
            .all(|&size| size == sizes[0] && size > 10 * BATCH_VALUE_BYTES),
        "every partition whole: {sizes:?}"
    );
}
