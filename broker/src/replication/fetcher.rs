//! The follower side: on each shard, one fetcher per leader broker fetches
//! the partitions this shard owns and follows from that leader, over its
//! own connection ([`super::link`]), with Kafka's replica Fetch (v15: the
//! replica state with this broker's registration epoch, each partition's
//! `current_leader_epoch` and `last_fetched_epoch`).
//!
//! Each partition is fetched from its log end, so the leader learns what
//! this replica has; the batches that come back are appended as the leader
//! wrote them ([`fjord_engine::log::PartitionLog::append_as_follower`]),
//! flushed unless the topic sets `write.caching`, and the high watermark
//! becomes the leader's, capped at the log end. A diverging epoch in the
//! answer (this log has records of an epoch the leader ended earlier)
//! truncates the log first, by Kafka's rule (KIP-279): to the leader's end
//! of that epoch when this log has the epoch, else to this log's end of
//! its own nearest epoch, and the next fetch asks again.
//!
//! A follower whose log ends below the leader's log start (retention or
//! DeleteRecords ran on the leader while it was away) is answered
//! `OFFSET_OUT_OF_RANGE` with that log start: nothing it holds is the
//! partition's any more, so it drops its log and starts an empty one there
//! (Kafka's `truncateFullyAndStartAt`), then fetches from it. Where the
//! leader's log start lies inside a batch, the empty log starts again at
//! the batch's base to take it. Each answer's log start moves this log's
//! up as far as the high watermark allows, as Kafka's follower does.
//!
//! A partition refused by the leader (not the leader any more, another
//! epoch) waits `replica.fetch.backoff.ms` or until the next image gives
//! it a new leader or epoch; a failed connection is opened again after the
//! same backoff.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use fjord_engine::batch::{split_batches, BatchHeader};
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::Storage;
use fjord_engine::{LeaderEpoch, Offset, TopicPartition};
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId as WireBrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::leader::truncation_offset;
use super::link::Link;
use super::write_caching;
use crate::advertised::advertised_brokers;
use crate::metadata::records::BrokerId;
use crate::metadata::{MetadataImage, PartitionImage};
use crate::server::Broker;
use crate::steering::SteerTo;

/// The Fetch version followers send: topic ids (v13) and the replica state
/// with the broker epoch (v15, KIP-903).
const FETCH_VERSION: i16 = 15;

/// How long a fetch may take beyond `replica.fetch.wait.max.ms` before the
/// connection counts as failed.
const FETCH_DEADLINE_SLACK: Duration = Duration::from_secs(10);

/// How long connecting to a leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Room in a response frame beyond `replica.fetch.response.max.bytes`
/// for its headers and one batch over the limit (KIP-74).
const RESPONSE_SLACK_BYTES: usize = 1 << 20;

/// A partition followed, as the fetcher knows it.
#[derive(Clone, Debug)]
struct Following {
    topic_id: Uuid,
    leader_epoch: LeaderEpoch,
    /// Not fetched before this (the leader refused it).
    backoff_until: Option<Instant>,
}

/// What a fetcher and the role loop share.
#[derive(Default)]
struct Followed {
    partitions: RefCell<BTreeMap<TopicPartition, Following>>,
    changed: Event,
    stopped: Cell<bool>,
}

/// One leader's fetcher.
struct Fetcher {
    followed: Rc<Followed>,
    task: glommio::task::JoinHandle<()>,
}

/// This shard's fetchers, by leader.
#[derive(Default)]
pub struct Fetchers {
    by_leader: HashMap<BrokerId, Fetcher>,
}

impl Fetchers {
    /// Follows `partition` (of `image`, in `state`) from its leader, moving
    /// it from another leader's fetcher if it was there.
    pub fn follow(
        &mut self,
        broker: &Rc<Broker>,
        image: &MetadataImage,
        partition: TopicPartition,
        state: &PartitionImage,
    ) {
        let Some(topic_id) = image
            .topics
            .get(&*partition.topic)
            .map(|topic| topic.uuid())
        else {
            return;
        };
        for (&leader, fetcher) in &self.by_leader {
            if leader != state.leader
                && fetcher
                    .followed
                    .partitions
                    .borrow_mut()
                    .remove(&partition)
                    .is_some()
            {
                fetcher.followed.changed.notify(usize::MAX);
            }
        }
        let fetcher = self.by_leader.entry(state.leader).or_insert_with(|| {
            let followed = Rc::new(Followed::default());
            let task = glommio::spawn_local(fetch_from(
                Rc::clone(broker),
                state.leader,
                Rc::clone(&followed),
            ))
            .detach();
            Fetcher { followed, task }
        });
        let mut partitions = fetcher.followed.partitions.borrow_mut();
        let known = partitions.get(&partition);
        if known.is_none_or(|known| known.leader_epoch != state.leader_epoch) {
            tracing::info!(
                %partition,
                leader = state.leader.0,
                epoch = state.leader_epoch.0,
                "following"
            );
            partitions.insert(
                partition,
                Following {
                    topic_id,
                    leader_epoch: state.leader_epoch,
                    backoff_until: None,
                },
            );
            drop(partitions);
            fetcher.followed.changed.notify(usize::MAX);
        }
    }

    /// Stops following every partition `keep` refuses, and stops the
    /// fetchers left with none.
    pub fn retain(&mut self, keep: impl Fn(&TopicPartition) -> bool) {
        self.by_leader.retain(|_, fetcher| {
            fetcher
                .followed
                .partitions
                .borrow_mut()
                .retain(|partition, _| keep(partition));
            fetcher.followed.changed.notify(usize::MAX);
            if fetcher.followed.partitions.borrow().is_empty() {
                fetcher.followed.stopped.set(true);
                false
            } else {
                true
            }
        });
    }

    /// Stops every fetcher and waits for them.
    pub async fn stop_all(self) {
        for fetcher in self.by_leader.into_values() {
            fetcher.followed.stopped.set(true);
            fetcher.followed.changed.notify(usize::MAX);
            fetcher.task.await;
        }
    }
}

/// Fetches the partitions in `followed` from `leader` until stopped.
async fn fetch_from(broker: Rc<Broker>, leader: BrokerId, followed: Rc<Followed>) {
    let settings = broker.replication.settings.clone();
    let mut link: Option<Link> = None;
    let mut session = Session::default();
    while !followed.stopped.get() && !broker.is_stopping() {
        let now = Instant::now();
        let ready: Vec<(TopicPartition, Following)> = followed
            .partitions
            .borrow()
            .iter()
            .filter(|(_, following)| following.backoff_until.is_none_or(|until| until <= now))
            .map(|(partition, following)| (partition.clone(), following.clone()))
            .collect();
        if ready.is_empty() {
            let next = followed
                .partitions
                .borrow()
                .values()
                .filter_map(|following| following.backoff_until)
                .min()
                .map_or(settings.replica_fetch_backoff, |until| {
                    until.saturating_duration_since(now)
                });
            pause(&broker, &followed, next).await;
            continue;
        }
        if link.is_none() {
            // A session lives on the leader's shard the connection landed on.
            session = Session::default();
            link = connect(&broker, leader).await;
            if link.is_none() {
                pause(&broker, &followed, settings.replica_fetch_backoff).await;
                continue;
            }
        }
        let Some(connection) = link.as_mut() else {
            continue;
        };
        let (request, wanted) = fetch_request(&broker, &ready, &session);
        let timeout = settings.replica_fetch_wait_max + FETCH_DEADLINE_SLACK;
        let response: FetchResponse = match connection
            .call(ApiKey::Fetch, FETCH_VERSION, &request, timeout)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(leader = leader.0, %error, "replica fetch failed");
                link = None;
                pause(&broker, &followed, settings.replica_fetch_backoff).await;
                continue;
            }
        };
        if response.error_code != 0 {
            let session_lost = [
                ResponseError::FetchSessionIdNotFound.code(),
                ResponseError::InvalidFetchSessionEpoch.code(),
            ]
            .contains(&response.error_code);
            session = Session::default();
            if !session_lost {
                tracing::info!(
                    leader = leader.0,
                    error = response.error_code,
                    "replica fetch refused"
                );
                pause(&broker, &followed, settings.replica_fetch_backoff).await;
            }
            continue;
        }
        session.advance(response.session_id, &wanted);
        take_answers(&broker, &followed, response, wanted).await;
    }
}

/// Takes the leader's answer to a fetch that asked `wanted`, every
/// partition at once (their appends and flushes overlap: one fetch round
/// costs one flush's time, not one per partition); a partition whose
/// answer was refused backs off.
async fn take_answers(
    broker: &Rc<Broker>,
    followed: &Followed,
    response: FetchResponse,
    wanted: BTreeMap<TopicPartition, Sent>,
) {
    let backoff = broker.replication.settings.replica_fetch_backoff;
    let by_id: HashMap<(Uuid, i32), (TopicPartition, LeaderEpoch)> = wanted
        .into_iter()
        .map(|(partition, sent)| {
            (
                (sent.topic_id, partition.partition),
                (partition, sent.leader_epoch),
            )
        })
        .collect();
    let mut taking = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let Some((partition, epoch)) = by_id.get(&(topic.topic_id, data.partition_index))
            else {
                continue;
            };
            // Still followed in the epoch it was fetched in: an image may
            // have moved it while the fetch was out.
            let current = followed
                .partitions
                .borrow()
                .get(partition)
                .is_some_and(|following| following.leader_epoch == *epoch);
            if !current {
                continue;
            }
            let broker = Rc::clone(broker);
            let partition = partition.clone();
            taking.push(glommio::spawn_local(async move {
                let taken = take_answer(&broker, &partition, data).await;
                (partition, taken)
            }));
        }
    }
    for task in taking {
        let (partition, taken) = task.await;
        let Err(refusal) = taken else {
            continue;
        };
        match refusal {
            Refusal::Leader(_) => {
                tracing::debug!(%partition, %refusal, "replica fetch of a partition refused");
            }
            Refusal::Engine(_) => {
                tracing::warn!(%partition, %refusal, "cannot take the leader's batches");
            }
        }
        if let Some(following) = followed.partitions.borrow_mut().get_mut(&partition) {
            following.backoff_until = Some(Instant::now() + backoff);
        }
    }
}

/// Waits `duration`, or less if the partitions followed change or the
/// broker stops.
async fn pause(broker: &Broker, followed: &Followed, duration: Duration) {
    let changed = followed.changed.listen();
    if followed.stopped.get() {
        return;
    }
    futures_lite::future::or(
        futures_lite::future::or(changed, glommio::timer::sleep(duration)),
        broker.until_stopping(),
    )
    .await;
}

/// A connection to `leader`'s client listener as the image has it.
async fn connect(broker: &Broker, leader: BrokerId) -> Option<Link> {
    let image = broker.controller.image();
    let Some(endpoint) = advertised_brokers(&image, true)
        .into_iter()
        .find(|advertised| advertised.id == leader)
    else {
        tracing::info!(leader = leader.0, "the leader has no listener in the image");
        return None;
    };
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let limit = broker.replication.settings.replica_fetch_response_max_bytes + RESPONSE_SLACK_BYTES;
    let client_id = format!(
        "fjord-replica-{}-shard-{}",
        broker.config.node_id,
        broker.shard.id()
    );
    let steer = SteerTo::toward(&image, leader, broker.shard.id());
    match Link::connect(&address, client_id, steer, CONNECT_TIMEOUT, limit).await {
        Ok(link) => Some(link),
        Err(error) => {
            tracing::info!(leader = leader.0, %address, %error, "cannot reach the leader");
            None
        }
    }
}

/// What a fetch asked of one partition; the leader's session keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    topic_id: Uuid,
    leader_epoch: LeaderEpoch,
    fetch_offset: Offset,
    last_fetched_epoch: i32,
    log_start: Offset,
}

/// The incremental fetch session (KIP-227) a fetcher keeps with its
/// leader: after a full fetch opens it, a fetch names only the partitions
/// whose fetch state changed (and those it forgets), and the leader
/// answers only partitions with news; with many partitions followed,
/// an idle fetch costs next to nothing on either side.
#[derive(Debug, Default)]
struct Session {
    /// 0 while there is none.
    id: i32,
    epoch: i32,
    sent: BTreeMap<TopicPartition, Sent>,
}

impl Session {
    /// Takes the leader's answer to a fetch that asked `wanted`: the
    /// session it opened (or 0), or the next epoch of this one.
    fn advance(&mut self, session_id: i32, wanted: &BTreeMap<TopicPartition, Sent>) {
        if self.id == 0 {
            self.id = session_id;
            self.epoch = 1;
        } else {
            // Kafka's next epoch: 1 after i32::MAX (0 opens, -1 closes).
            self.epoch = self.epoch.checked_add(1).unwrap_or(1);
        }
        self.sent = if self.id == 0 {
            BTreeMap::new()
        } else {
            wanted.clone()
        };
    }
}

/// The replica Fetch for `ready`, each from its log end, in `session`:
/// a full fetch opening one when there is none, else only the partitions
/// whose state changed; with the state of every partition it asks.
fn fetch_request(
    broker: &Broker,
    ready: &[(TopicPartition, Following)],
    session: &Session,
) -> (FetchRequest, BTreeMap<TopicPartition, Sent>) {
    let settings = &broker.replication.settings;
    let node = broker.config.node_id;
    let broker_epoch = broker
        .controller
        .image()
        .brokers
        .get(&BrokerId(node))
        .map_or(-1, |registration| registration.epoch.0);
    let wanted: BTreeMap<TopicPartition, Sent> = ready
        .iter()
        .filter_map(|(partition, following)| {
            let log = broker.shard.local_log(partition).ok()?;
            let offsets = log.offsets();
            Some((
                partition.clone(),
                Sent {
                    topic_id: following.topic_id,
                    leader_epoch: following.leader_epoch,
                    fetch_offset: offsets.log_end,
                    last_fetched_epoch: log.leader_epochs().last().map_or(-1, |(epoch, _)| epoch.0),
                    log_start: offsets.log_start,
                },
            ))
        })
        .collect();
    let mut topics: Vec<FetchTopic> = Vec::new();
    let changed = wanted
        .iter()
        .filter(|(partition, sent)| session.id == 0 || session.sent.get(*partition) != Some(*sent));
    for (partition, sent) in changed {
        let fetch = FetchPartition::default()
            .with_partition(partition.partition)
            .with_current_leader_epoch(sent.leader_epoch.0)
            .with_fetch_offset(sent.fetch_offset.0)
            .with_last_fetched_epoch(sent.last_fetched_epoch)
            .with_log_start_offset(sent.log_start.0)
            .with_partition_max_bytes(
                i32::try_from(settings.replica_fetch_max_bytes).unwrap_or(i32::MAX),
            );
        match topics.last_mut() {
            Some(topic) if topic.topic_id == sent.topic_id => topic.partitions.push(fetch),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic_id(sent.topic_id)
                    .with_partitions(vec![fetch]),
            ),
        }
    }
    let mut forgotten: Vec<ForgottenTopic> = Vec::new();
    for (partition, sent) in &session.sent {
        if wanted.contains_key(partition) {
            continue;
        }
        match forgotten.last_mut() {
            Some(topic) if topic.topic_id == sent.topic_id => {
                topic.partitions.push(partition.partition);
            }
            _ => forgotten.push(
                ForgottenTopic::default()
                    .with_topic_id(sent.topic_id)
                    .with_partitions(vec![partition.partition]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(WireBrokerId(node))
                .with_replica_epoch(broker_epoch),
        )
        .with_max_wait_ms(
            i32::try_from(settings.replica_fetch_wait_max.as_millis()).unwrap_or(i32::MAX),
        )
        .with_min_bytes(i32::try_from(settings.replica_fetch_min_bytes).unwrap_or(i32::MAX))
        .with_max_bytes(
            i32::try_from(settings.replica_fetch_response_max_bytes).unwrap_or(i32::MAX),
        )
        .with_session_id(session.id)
        .with_session_epoch(if session.id == 0 { 0 } else { session.epoch })
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    (request, wanted)
}

/// Why a partition's answer was not taken.
#[derive(Debug)]
enum Refusal {
    /// The leader refused the partition with this code.
    Leader(i16),
    /// The log failed.
    Engine(fjord_engine::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Leader(code) => write!(f, "the leader answered error {code}"),
            Self::Engine(error) => error.fmt(f),
        }
    }
}

impl From<fjord_engine::Error> for Refusal {
    fn from(error: fjord_engine::Error) -> Self {
        Self::Engine(error)
    }
}

/// Takes the leader's answer for `partition`: truncates on a diverging
/// epoch, else appends the batches and follows the high watermark.
async fn take_answer(
    broker: &Broker,
    partition: &TopicPartition,
    data: PartitionData,
) -> Result<(), Refusal> {
    if data.error_code != 0 {
        if data.error_code == ResponseError::OffsetOutOfRange.code() {
            return start_at_leaders_log_start(broker, partition, data.log_start_offset).await;
        }
        return Err(Refusal::Leader(data.error_code));
    }
    let log = broker.shard.local_log(partition)?;
    if data.diverging_epoch != EpochEndOffset::default() {
        let end = truncation_point(&log, &data.diverging_epoch);
        tracing::info!(
            %partition,
            leader_epoch = data.diverging_epoch.epoch,
            leader_end = data.diverging_epoch.end_offset,
            truncate_to = %end,
            "the log diverged from the leader's"
        );
        log.truncate_to(end).await?;
        return Ok(());
    }
    if let Some(records) = data.records.filter(|records| !records.is_empty()) {
        let offsets = log.offsets();
        let batches = batches_from(&records, offsets.log_end);
        if let Some(first) = batches.first() {
            let base =
                BatchHeader::parse(first).map_or(offsets.log_end, |header| header.base_offset);
            if base < offsets.log_end && offsets.log_start == offsets.log_end {
                // An empty log started at the leader's log start, which lies
                // inside this batch.
                log.truncate_fully_and_start_at(base).await?;
            }
            log.append_as_follower(&batches).await?;
            if !write_caching(broker, &partition.topic) {
                log.flush().await?;
            }
        }
    }
    let log_end = log.offsets().log_end;
    log.advance_high_watermark(Offset(data.high_watermark).min(log_end));
    let log_start = Offset(data.log_start_offset).min(log.offsets().high_watermark);
    if log_start > log.offsets().log_start {
        log.delete_records(log_start).await?;
    }
    Ok(())
}

/// Takes the leader's `OFFSET_OUT_OF_RANGE` answer to a fetch from this
/// log's end: a leader log start past it means this replica was away while
/// retention or DeleteRecords moved it, and starts afresh there (Kafka's
/// `handleOutOfRangeError`). A log end past the leader's is cut by the
/// diverging epoch instead, so any other answer is refused as it came.
async fn start_at_leaders_log_start(
    broker: &Broker,
    partition: &TopicPartition,
    leader_log_start: i64,
) -> Result<(), Refusal> {
    let log = broker.shard.local_log(partition)?;
    let log_end = log.offsets().log_end;
    if leader_log_start <= log_end.0 {
        tracing::warn!(
            %partition,
            leader_log_start,
            log_end = %log_end,
            "this replica's log end is out of the leader's range"
        );
        return Err(Refusal::Leader(ResponseError::OffsetOutOfRange.code()));
    }
    tracing::warn!(
        %partition,
        leader_log_start,
        log_end = %log_end,
        "this replica's log ends below the leader's log start: truncating it fully"
    );
    log.truncate_fully_and_start_at(Offset(leader_log_start))
        .await?;
    Ok(())
}

/// The whole batches of a fetch answer from `log_end` on, each a slice of
/// `records`. A leader may start its answer at an earlier batch (a read
/// that starts at an index entry, as consumers allow), so batches that end
/// below `log_end` are skipped; a batch cut short (a leader under a byte
/// limit may end with one) is left for the next fetch.
fn batches_from(records: &Bytes, log_end: Offset) -> Vec<Bytes> {
    split_batches(records)
        .map_while(Result::ok)
        .filter(|batch| {
            BatchHeader::parse(batch).is_ok_and(|header| header.last_offset() >= log_end)
        })
        .map(|batch| records.slice_ref(batch))
        .collect()
}

/// Where this log is cut after the leader answered that its `diverging`
/// epoch ends at `diverging.end_offset`; see [`truncation_offset`].
fn truncation_point<S: Storage>(log: &PartitionLog<S>, diverging: &EpochEndOffset) -> Offset {
    let epoch = LeaderEpoch(diverging.epoch);
    truncation_offset(
        log.end_offset_for_epoch(epoch),
        epoch,
        Offset(diverging.end_offset),
        log.offsets().log_end,
    )
}

#[cfg(test)]
mod tests {
    use fjord_engine::testkit::values_batch;
    use fjord_engine::TimestampMs;

    use super::*;

    /// A batch of `count` records at `base`.
    fn batch(base: i64, count: usize) -> Vec<u8> {
        let mut bytes = values_batch(&vec![b"v".to_vec(); count], TimestampMs(1), None);
        bytes[..8].copy_from_slice(&base.to_be_bytes());
        bytes
    }

    #[test]
    fn batches_below_the_log_end_are_skipped_and_a_cut_batch_left() {
        let mut records = Vec::new();
        for (base, count) in [(0, 3), (3, 2), (5, 4)] {
            records.extend(batch(base, count));
        }
        let whole = records.len();
        records.extend(&batch(9, 2)[..20]);
        let records = Bytes::from(records);
        let offsets = |batches: Vec<Bytes>| -> Vec<i64> {
            batches
                .iter()
                .map(|batch| BatchHeader::parse(batch).unwrap().base_offset.0)
                .collect()
        };
        assert_eq!(offsets(batches_from(&records, Offset(0))), [0, 3, 5]);
        assert_eq!(offsets(batches_from(&records, Offset(5))), [5]);
        // A batch holding the log end is kept (the append refuses it: the
        // logs diverged within one epoch).
        assert_eq!(offsets(batches_from(&records, Offset(4))), [3, 5]);
        assert!(batches_from(&records.slice(..whole), Offset(9)).is_empty());
    }

    #[test]
    fn a_session_opens_on_the_leaders_id_and_counts_epochs() {
        let partition = TopicPartition::new("t", 0);
        let sent = Sent {
            topic_id: Uuid::from_u128(1),
            leader_epoch: LeaderEpoch(3),
            fetch_offset: Offset(10),
            last_fetched_epoch: 3,
            log_start: Offset(0),
        };
        let wanted = BTreeMap::from([(partition.clone(), sent)]);
        let mut session = Session::default();
        session.advance(0, &wanted);
        assert_eq!(session.id, 0, "the leader opened none");
        assert!(session.sent.is_empty());
        session.advance(77, &wanted);
        assert_eq!((session.id, session.epoch), (77, 1));
        assert!(session.sent.contains_key(&partition));
        session.epoch = i32::MAX;
        session.advance(77, &wanted);
        assert_eq!(session.epoch, 1, "the epoch wraps to 1");
    }
}
