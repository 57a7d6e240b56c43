//! Incremental fetch sessions (KIP-227).
//!
//! Without a session a consumer names every partition it follows, with its
//! offset, in every Fetch, and the broker answers every partition even when
//! nothing changed: with hundreds of partitions most of each round trip is
//! bookkeeping. In a session the broker remembers the partitions and their
//! fetch offsets; the client then sends only what changed (new offsets,
//! added partitions, forgotten ones) and the broker answers only partitions
//! with news: records, a moved high watermark or log start, or an error.
//!
//! The protocol, from the request's `session_id` and `session_epoch`:
//! - epoch -1 (final): a full fetch without a session; a session named by
//!   the id is closed first.
//! - epoch 0 (initial): a full fetch that opens a session (a session named
//!   by the id is closed first); the response carries the new id, or 0 when
//!   no slot is free, which leaves the client sessionless.
//! - epoch > 0: an incremental fetch in session `id`, whose epoch must be
//!   exactly the next one expected; otherwise `FETCH_SESSION_ID_NOT_FOUND`
//!   or `INVALID_FETCH_SESSION_EPOCH`, after which clients start over with a
//!   full fetch.
//!
//! Sessions live on the shard whose connection opened them: a connection
//! stays on its shard for life, and a client that reconnects elsewhere is
//! told its session is unknown and opens a new one, as KIP-227 expects of a
//! broker that lost its cache. Ids carry the shard in their residue modulo
//! the shard count, so two shards never hand out the same id. The cache
//! holds at most `max.incremental.fetch.session.cache.slots` sessions
//! (divided between shards); a full one makes room by evicting a session
//! idle for [`EVICTION_IDLE`], else the smallest session if the new one is
//! larger, as Kafka does.
//!
//! From Fetch v13 clients name topics by id (KIP-516), before by name. A
//! session remembers each partition as the client named it
//! ([`PartitionRef`]); ids are resolved to names against the metadata image
//! at every fetch by the handler, so a topic deleted and created again under
//! the same name is a different topic to a session that follows its old
//! id. A session opened with names cannot go on with ids, or the reverse:
//! such a request is refused with `FETCH_SESSION_TOPIC_ID_ERROR`, as Kafka
//! does, and the client starts over with a full fetch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use fjord_engine::Offset;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::fetch_codec::TOPIC_ID_VERSION;

/// The epoch of a full fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that uses no session.
pub const FINAL_EPOCH: i32 = -1;
/// The session id meaning "no session".
pub const NO_SESSION: i32 = 0;
/// How long a session must go unused before any new session may evict it
/// (Kafka's `min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_IDLE: Duration = Duration::from_secs(120);
/// The most partitions one session may hold; a client asking for more is
/// served without a session.
pub const SESSION_PARTITIONS_MAX: usize = 100_000;

/// A topic as a Fetch names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicRef {
    /// By name, up to Fetch v12.
    Name(String),
    /// By id, from Fetch v13.
    Id(Uuid),
}

/// A partition as a Fetch names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionRef {
    /// Its topic.
    pub topic: TopicRef,
    /// Its index in the topic.
    pub index: i32,
}

impl PartitionRef {
    /// Partition `index` of the topic named `name`.
    #[must_use]
    pub fn named(name: impl Into<String>, index: i32) -> Self {
        Self {
            topic: TopicRef::Name(name.into()),
            index,
        }
    }
}

/// One partition a fetch reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchTarget {
    /// The partition, as the client names it.
    pub partition: PartitionRef,
    /// The offset to read from.
    pub offset: Offset,
    /// The partition's byte limit.
    pub max_bytes: usize,
    /// The leader epoch the client knows (KIP-320), or `-1`.
    pub current_leader_epoch: i32,
    /// A follower's: the epoch of the last batch it has, or `-1` (KIP-595:
    /// the leader answers a diverging epoch when the follower's log
    /// diverged from its own).
    pub last_fetched_epoch: i32,
}

/// How a fetch relates to the session cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchContext {
    /// A full fetch with no session: every partition is answered and the
    /// response says session 0.
    Sessionless,
    /// A full fetch that opened session `id`: every partition is answered.
    Full(i32),
    /// An incremental fetch in session `id`: only partitions with news are
    /// answered.
    Incremental(i32),
}

impl FetchContext {
    /// The session id the response carries.
    #[must_use]
    pub fn session_id(self) -> i32 {
        match self {
            Self::Sessionless => NO_SESSION,
            Self::Full(id) | Self::Incremental(id) => id,
        }
    }
}

/// What the client last heard about a partition in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reported {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct SessionPartition {
    offset: Offset,
    max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    reported: Option<Reported>,
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    /// Whether the client names topics by id (Fetch v13+).
    uses_topic_ids: bool,
    partitions: IndexMap<PartitionRef, SessionPartition>,
    last_used: Instant,
}

/// One shard's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    sessions: RefCell<HashMap<i32, Session>>,
    slots: usize,
    shard: u32,
    shard_count: u32,
}

impl FetchSessions {
    /// The cache of shard `shard` of `shard_count`, holding up to `slots`
    /// sessions (0 disables sessions).
    ///
    /// # Panics
    /// If `shard` is not below `shard_count`.
    #[must_use]
    pub fn new(shard: u32, shard_count: u32, slots: usize) -> Self {
        assert!(shard < shard_count, "shard {shard} of {shard_count}");
        Self {
            sessions: RefCell::new(HashMap::new()),
            slots,
            shard,
            shard_count,
        }
    }

    /// Sessions open on this shard.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// Whether no session is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves `request`, of Fetch `version`, against the cache: the
    /// context of its answer and every partition to read, grouped by topic
    /// in session order.
    ///
    /// # Errors
    /// `FETCH_SESSION_ID_NOT_FOUND` or `INVALID_FETCH_SESSION_EPOCH` for an
    /// incremental fetch in a session that is unknown or out of step, and
    /// `FETCH_SESSION_TOPIC_ID_ERROR` for one that names topics otherwise
    /// than the fetch that opened the session (by id or by name); the whole
    /// response carries the error and no partition.
    pub fn begin(
        &self,
        request: &FetchRequest,
        version: i16,
        now: Instant,
    ) -> Result<(FetchContext, Vec<FetchTarget>), ResponseError> {
        let uses_topic_ids = version >= TOPIC_ID_VERSION;
        let topic_ref = |name: &kafka_protocol::messages::TopicName, id: Uuid| {
            if uses_topic_ids {
                TopicRef::Id(id)
            } else {
                TopicRef::Name(name.0.to_string())
            }
        };
        let requested = request.topics.iter().flat_map(|topic| {
            topic.partitions.iter().map(move |partition| FetchTarget {
                partition: PartitionRef {
                    topic: topic_ref(&topic.topic, topic.topic_id),
                    index: partition.partition,
                },
                offset: Offset(partition.fetch_offset),
                max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: partition.current_leader_epoch,
                last_fetched_epoch: partition.last_fetched_epoch,
            })
        });
        let epoch = request.session_epoch;
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if request.session_id != NO_SESSION {
                self.sessions.borrow_mut().remove(&request.session_id);
            }
            let targets: Vec<FetchTarget> = requested.collect();
            let context = if epoch == INITIAL_EPOCH {
                self.open(&targets, uses_topic_ids, now)
                    .map_or(FetchContext::Sessionless, FetchContext::Full)
            } else {
                FetchContext::Sessionless
            };
            return Ok((context, group_by_topic(targets)));
        }
        let mut sessions = self.sessions.borrow_mut();
        let Some(session) = sessions.get_mut(&request.session_id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        if epoch != session.next_epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        if uses_topic_ids != session.uses_topic_ids {
            return Err(ResponseError::FetchSessionTopicIdError);
        }
        session.next_epoch = next_epoch(epoch);
        session.last_used = now;
        for target in requested {
            let entry = session
                .partitions
                .entry(target.partition)
                .or_insert(SessionPartition {
                    offset: target.offset,
                    max_bytes: target.max_bytes,
                    current_leader_epoch: target.current_leader_epoch,
                    last_fetched_epoch: target.last_fetched_epoch,
                    reported: None,
                });
            entry.offset = target.offset;
            entry.max_bytes = target.max_bytes;
            entry.current_leader_epoch = target.current_leader_epoch;
            entry.last_fetched_epoch = target.last_fetched_epoch;
        }
        for forgotten in &request.forgotten_topics_data {
            for &index in &forgotten.partitions {
                session.partitions.shift_remove(&PartitionRef {
                    topic: topic_ref(&forgotten.topic, forgotten.topic_id),
                    index,
                });
            }
        }
        if session.partitions.len() > SESSION_PARTITIONS_MAX {
            // The client grew the session past its bound: close it; the
            // epoch error makes the client fall back to a full fetch, which
            // is then served without a session.
            sessions.remove(&request.session_id);
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        let targets = session
            .partitions
            .iter()
            .map(|(partition, cached)| FetchTarget {
                partition: partition.clone(),
                offset: cached.offset,
                max_bytes: cached.max_bytes,
                current_leader_epoch: cached.current_leader_epoch,
                last_fetched_epoch: cached.last_fetched_epoch,
            })
            .collect();
        Ok((
            FetchContext::Incremental(request.session_id),
            group_by_topic(targets),
        ))
    }

    /// Records what the answer for `partition` tells the client and whether
    /// the answer must be sent: always in a full fetch; in an incremental
    /// one only with records, an error, a diverging epoch (a follower's),
    /// or offsets that moved since the client last heard.
    pub fn must_answer(
        &self,
        context: FetchContext,
        partition: &PartitionRef,
        data: &PartitionData,
        has_records: bool,
    ) -> bool {
        let session_id = match context {
            FetchContext::Sessionless => return true,
            FetchContext::Full(id) | FetchContext::Incremental(id) => id,
        };
        let mut sessions = self.sessions.borrow_mut();
        let Some(cached) = sessions
            .get_mut(&session_id)
            .and_then(|session| session.partitions.get_mut(partition))
        else {
            // Closed or evicted while this fetch ran: answer everything.
            return true;
        };
        let now = Reported {
            high_watermark: data.high_watermark,
            last_stable_offset: data.last_stable_offset,
            log_start_offset: data.log_start_offset,
        };
        let moved = cached.reported != Some(now);
        cached.reported = Some(now);
        let diverging = data.diverging_epoch != EpochEndOffset::default();
        matches!(context, FetchContext::Full(_))
            || has_records
            || data.error_code != 0
            || diverging
            || moved
    }

    /// Opens a session over `targets`, making room if the cache is full;
    /// `None` if it cannot.
    fn open(&self, targets: &[FetchTarget], uses_topic_ids: bool, now: Instant) -> Option<i32> {
        if targets.len() > SESSION_PARTITIONS_MAX {
            return None;
        }
        let mut sessions = self.sessions.borrow_mut();
        if sessions.len() >= self.slots {
            let victim = evictable(&sessions, targets.len(), now)?;
            sessions.remove(&victim);
        }
        let id = loop {
            let id = self.fresh_id();
            if !sessions.contains_key(&id) {
                break id;
            }
        };
        let partitions = targets
            .iter()
            .map(|target| {
                (
                    target.partition.clone(),
                    SessionPartition {
                        offset: target.offset,
                        max_bytes: target.max_bytes,
                        current_leader_epoch: target.current_leader_epoch,
                        last_fetched_epoch: target.last_fetched_epoch,
                        reported: None,
                    },
                )
            })
            .collect();
        sessions.insert(
            id,
            Session {
                next_epoch: next_epoch(INITIAL_EPOCH),
                uses_topic_ids,
                partitions,
                last_used: now,
            },
        );
        Some(id)
    }

    /// A random positive id whose residue modulo the shard count is this
    /// shard's id.
    fn fresh_id(&self) -> i32 {
        let per_shard = i32::MAX as u32 / self.shard_count;
        loop {
            let random = (uuid::Uuid::new_v4().as_u128() as u32) % per_shard;
            let id = random * self.shard_count + self.shard;
            if id != 0 {
                return i32::try_from(id).expect("ids stay below i32::MAX");
            }
        }
    }
}

/// The session Kafka would evict for a new one of `wanted_partitions`: the
/// least recently used if idle long enough, else the smallest if smaller.
fn evictable(
    sessions: &HashMap<i32, Session>,
    wanted_partitions: usize,
    now: Instant,
) -> Option<i32> {
    let (&oldest, session) = sessions
        .iter()
        .min_by_key(|(_, session)| session.last_used)?;
    if now.saturating_duration_since(session.last_used) >= EVICTION_IDLE {
        return Some(oldest);
    }
    let (&smallest, session) = sessions
        .iter()
        .min_by_key(|(_, session)| session.partitions.len())?;
    (session.partitions.len() < wanted_partitions).then_some(smallest)
}

/// The epoch after `epoch`: epochs wrap to 1, never to the reserved 0 or -1.
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// `targets` reordered so each topic's partitions are together, topics in
/// order of first appearance.
fn group_by_topic(targets: Vec<FetchTarget>) -> Vec<FetchTarget> {
    let mut topics: IndexMap<TopicRef, Vec<FetchTarget>> = IndexMap::new();
    for target in targets {
        topics
            .entry(target.partition.topic.clone())
            .or_default()
            .push(target);
    }
    topics.into_values().flatten().collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// A Fetch version that names topics by name.
    const NAMES: i16 = TOPIC_ID_VERSION - 1;

    fn request(
        session_id: i32,
        epoch: i32,
        partitions: &[(&str, i32, i64)],
        forgotten: &[(&str, i32)],
    ) -> FetchRequest {
        let topic = |name: &str| TopicName(StrBytes::from_string(name.to_owned()));
        FetchRequest::default()
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(
                partitions
                    .iter()
                    .map(|&(name, index, offset)| {
                        FetchTopic::default()
                            .with_topic(topic(name))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(index)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1024)])
                    })
                    .collect(),
            )
            .with_forgotten_topics_data(
                forgotten
                    .iter()
                    .map(|&(name, index)| {
                        ForgottenTopic::default()
                            .with_topic(topic(name))
                            .with_partitions(vec![index])
                    })
                    .collect(),
            )
    }

    fn data(high_watermark: i64) -> PartitionData {
        PartitionData::default()
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark)
            .with_log_start_offset(0)
    }

    fn names(targets: &[FetchTarget]) -> Vec<(String, i32, i64)> {
        targets
            .iter()
            .map(|target| {
                let TopicRef::Name(name) = &target.partition.topic else {
                    panic!("{target:?} is named by id");
                };
                (name.clone(), target.partition.index, target.offset.0)
            })
            .collect()
    }

    #[test]
    fn a_session_remembers_partitions_and_takes_only_changes() {
        let cache = FetchSessions::new(1, 2, 10);
        let now = Instant::now();
        let (context, targets) = cache
            .begin(
                &request(0, 0, &[("a", 0, 5), ("b", 0, 7), ("a", 1, 9)], &[]),
                NAMES,
                now,
            )
            .unwrap();
        let FetchContext::Full(id) = context else {
            panic!("an initial fetch opens a session, got {context:?}");
        };
        assert_eq!(id % 2, 1, "ids carry their shard");
        assert_eq!(
            names(&targets),
            [("a".into(), 0, 5), ("a".into(), 1, 9), ("b".into(), 0, 7)]
        );
        let (context, targets) = cache
            .begin(&request(id, 1, &[("a", 0, 6)], &[("b", 0)]), NAMES, now)
            .unwrap();
        assert_eq!(context, FetchContext::Incremental(id));
        assert_eq!(names(&targets), [("a".into(), 0, 6), ("a".into(), 1, 9)]);
    }

    #[test]
    fn incremental_answers_carry_only_news() {
        let cache = FetchSessions::new(0, 1, 10);
        let now = Instant::now();
        let (full, _) = cache
            .begin(&request(0, 0, &[("a", 0, 0), ("a", 1, 0)], &[]), NAMES, now)
            .unwrap();
        let a0 = PartitionRef::named("a", 0);
        let a1 = PartitionRef::named("a", 1);
        assert!(cache.must_answer(full, &a0, &data(3), false));
        assert!(cache.must_answer(full, &a1, &data(0), false));
        let (incremental, _) = cache
            .begin(&request(full.session_id(), 1, &[], &[]), NAMES, now)
            .unwrap();
        assert!(
            !cache.must_answer(incremental, &a0, &data(3), false),
            "nothing new"
        );
        assert!(
            cache.must_answer(incremental, &a1, &data(4), false),
            "watermark moved"
        );
        assert!(
            cache.must_answer(incremental, &a0, &data(3), true),
            "records"
        );
        let error = data(3).with_error_code(ResponseError::NotLeaderOrFollower.code());
        assert!(cache.must_answer(incremental, &a0, &error, false), "error");
        let diverging = data(3)
            .with_diverging_epoch(EpochEndOffset::default().with_epoch(2).with_end_offset(7));
        assert!(
            cache.must_answer(incremental, &a0, &diverging, false),
            "a follower's diverging epoch"
        );
    }

    #[test]
    fn unknown_sessions_and_stale_epochs_are_refused() {
        let cache = FetchSessions::new(0, 1, 10);
        let now = Instant::now();
        assert_eq!(
            cache
                .begin(&request(42, 1, &[], &[]), NAMES, now)
                .unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        let (context, _) = cache
            .begin(&request(0, 0, &[("a", 0, 0)], &[]), NAMES, now)
            .unwrap();
        let id = context.session_id();
        cache.begin(&request(id, 1, &[], &[]), NAMES, now).unwrap();
        assert_eq!(
            cache
                .begin(&request(id, 1, &[], &[]), NAMES, now)
                .unwrap_err(),
            ResponseError::InvalidFetchSessionEpoch,
            "a replayed epoch"
        );
        cache.begin(&request(id, 2, &[], &[]), NAMES, now).unwrap();
        let (context, _) = cache
            .begin(&request(id, FINAL_EPOCH, &[], &[]), NAMES, now)
            .unwrap();
        assert_eq!(context, FetchContext::Sessionless);
        assert!(cache.is_empty(), "a final fetch closes its session");
    }

    #[test]
    fn a_full_cache_evicts_idle_then_smaller_sessions_or_goes_sessionless() {
        let cache = FetchSessions::new(0, 1, 1);
        let start = Instant::now();
        let (first, _) = cache
            .begin(
                &request(0, 0, &[("a", 0, 0), ("a", 1, 0)], &[]),
                NAMES,
                start,
            )
            .unwrap();
        let (second, _) = cache
            .begin(&request(0, 0, &[("b", 0, 0)], &[]), NAMES, start)
            .unwrap();
        assert_eq!(
            second,
            FetchContext::Sessionless,
            "a busy, larger session stays"
        );
        let (third, _) = cache
            .begin(
                &request(0, 0, &[("c", 0, 0), ("c", 1, 0), ("c", 2, 0)], &[]),
                NAMES,
                start,
            )
            .unwrap();
        assert!(
            matches!(third, FetchContext::Full(_)),
            "a larger session evicts a smaller"
        );
        assert_eq!(
            cache
                .begin(&request(first.session_id(), 1, &[], &[]), NAMES, start)
                .unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        let later = start + EVICTION_IDLE;
        let (fourth, _) = cache
            .begin(&request(0, 0, &[("d", 0, 0)], &[]), NAMES, later)
            .unwrap();
        assert!(
            matches!(fourth, FetchContext::Full(_)),
            "an idle session is evicted"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_session_follows_topics_by_id_and_refuses_names_then() {
        let cache = FetchSessions::new(0, 1, 10);
        let now = Instant::now();
        let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
        let by_id = |id: Uuid, index: i32| {
            FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(index)
                    .with_partition_max_bytes(1024)])
        };
        let full = FetchRequest::default()
            .with_session_epoch(INITIAL_EPOCH)
            .with_topics(vec![by_id(a, 0), by_id(b, 0), by_id(a, 1)]);
        let (context, targets) = cache.begin(&full, TOPIC_ID_VERSION, now).unwrap();
        let id_ref = |id: Uuid, index: i32| PartitionRef {
            topic: TopicRef::Id(id),
            index,
        };
        let partitions = |targets: Vec<FetchTarget>| {
            targets
                .into_iter()
                .map(|target| target.partition)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            partitions(targets),
            [id_ref(a, 0), id_ref(a, 1), id_ref(b, 0)],
            "grouped by topic id"
        );
        let forget_b = FetchRequest::default()
            .with_session_id(context.session_id())
            .with_session_epoch(1)
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic_id(b)
                .with_partitions(vec![0])]);
        let (_, targets) = cache.begin(&forget_b, TOPIC_ID_VERSION, now).unwrap();
        assert_eq!(partitions(targets), [id_ref(a, 0), id_ref(a, 1)]);
        assert_eq!(
            cache
                .begin(&request(context.session_id(), 2, &[], &[]), NAMES, now)
                .unwrap_err(),
            ResponseError::FetchSessionTopicIdError,
            "a session opened with ids goes on with ids"
        );
    }

    #[test]
    fn epochs_wrap_past_the_reserved_values() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(1), 2);
    }
}
