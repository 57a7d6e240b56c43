//! The coordinator follows the leadership of `__consumer_offsets`: this
//! broker coordinates the groups of the partitions it leads and no others,
//! as in Kafka, where a group's coordinator is the leader of its partition
//! (what FindCoordinator names).
//!
//! Leadership changes while the broker runs: the controller elects another
//! in-sync replica when a leader is fenced, a controlled shutdown moves
//! leaders away, a broker comes back. Shard 0 runs a reconcile round on
//! every image the controller publishes, and every
//! [`RETRY_INTERVAL`] for loads that failed, comparing each partition's
//! leader in the image with what the coordinator holds ([`step`]):
//! - led here in a leader epoch other than the one loaded: the groups are
//!   read back from the log, up to its log end: the new leader's log is
//!   the one every replica will agree with, and it holds what another
//!   leader wrote meanwhile, which this broker received as its follower.
//!   Until then the groups answer `COORDINATOR_LOAD_IN_PROGRESS`.
//! - not led here (another broker leads it, or none): the groups are
//!   dropped, and every JoinGroup and SyncGroup waiting on one is woken to
//!   answer `NOT_COORDINATOR` at once, so its client looks the coordinator
//!   up again instead of waiting out its rebalance timeout.
//!
//! The first round at start is the start's load; there is no other path.
//!
//! # Why loads run in tasks, and why they check their epoch
//! A load runs in a task of its own (each partition is read on its own
//! shard), so a large partition holds up neither the others nor the next
//! round: a leadership lost during a load is unloaded at once. When the
//! read ends, the load installs the groups only if the partition is still
//! loading in the load's leader epoch, in the coordinator and in the
//! current image; otherwise the partition was lost (and maybe regained)
//! meanwhile, the log read may lack what the other leader wrote, and the
//! read is dropped for the round that follows the change. At most one load
//! per partition runs: a round that starts one cancels the previous one.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use fjord_engine::{LeaderEpoch, TopicPartition};

use super::{read_partition, Coordination, GroupCoordinator};
use crate::image_follower::{next_round, RETRY_INTERVAL};
use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;
use crate::partition;
use crate::server::Broker;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

/// What a reconcile round does with one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the coordinator already holds what the image says.
    Keep,
    /// Read the partition back as its leader in this epoch.
    Load(LeaderEpoch),
    /// Drop its groups: this broker does not lead it.
    Unload,
}

/// The step for a partition the coordinator holds as `held`, which the
/// image says this broker leads in epoch `led_in` (`None`: it does not).
/// A failed load is tried again; a leadership lost and regained between
/// two rounds is a new epoch, so it is read back again.
#[must_use]
pub fn step(held: Coordination, led_in: Option<LeaderEpoch>) -> Step {
    match (held, led_in) {
        (Coordination::NotCoordinator, None) => Step::Keep,
        (_, None) => Step::Unload,
        (Coordination::Loading(loaded) | Coordination::Active(loaded), Some(epoch))
            if loaded == epoch =>
        {
            Step::Keep
        }
        (_, Some(epoch)) => Step::Load(epoch),
    }
}

/// One reconcile round against `image` for broker `node`: unloads every
/// partition it no longer leads and marks every one to load as loading,
/// waking the waiters of the groups either drops. Returns the partitions
/// whose step was not [`Step::Keep`], for the caller to start (or cancel)
/// their loads.
pub fn reconcile(
    coordinator: &GroupCoordinator,
    image: &MetadataImage,
    node: BrokerId,
) -> Vec<(i32, Step)> {
    let topic = image.topics.get(CONSUMER_OFFSETS_TOPIC);
    let mut steps = Vec::new();
    for index in 0..coordinator.settings.partitions {
        let led_in = topic
            .and_then(|topic| topic.partition(index))
            .filter(|partition| partition.leader == node)
            .map(|partition| partition.leader_epoch);
        let mut state = coordinator.lock_partition(index);
        let step = step(state.coordination, led_in);
        state.coordination = match step {
            Step::Keep => continue,
            Step::Load(leader_epoch) => Coordination::Loading(leader_epoch),
            Step::Unload => Coordination::NotCoordinator,
        };
        let dropped = std::mem::take(&mut state.groups);
        drop(state);
        if !dropped.is_empty() {
            tracing::info!(
                partition = index,
                groups = dropped.len(),
                ?step,
                "the groups' partition changed leadership; dropping them"
            );
        }
        // After the state changed: a woken waiter looks again and finds
        // its group gone.
        for group in dropped.values() {
            group.changed.notify(usize::MAX);
        }
        steps.push((index, step));
    }
    steps
}

/// Reads partition `index` back and installs its groups if it is still
/// loading in `leader_epoch` here and in the current image (see the module
/// documentation); a failed read leaves it [`Coordination::LoadFailed`]
/// for the next round.
pub async fn load(broker: Rc<Broker>, index: i32, leader_epoch: LeaderEpoch) {
    let started = Instant::now();
    let read = read_partition(&broker, index).await;
    let node = BrokerId(broker.config.node_id);
    let still_led = partition::state(&broker, &TopicPartition::new(CONSUMER_OFFSETS_TOPIC, index))
        .is_ok_and(|state| state.leader == node && state.leader_epoch == leader_epoch);
    let mut state = broker.groups.lock_partition(index);
    if !still_led || state.coordination != Coordination::Loading(leader_epoch) {
        tracing::info!(
            partition = index,
            leader_epoch = leader_epoch.0,
            "the leadership changed during the load; dropping what was read"
        );
        return;
    }
    match read {
        Ok(groups) => {
            tracing::info!(
                partition = index,
                leader_epoch = leader_epoch.0,
                groups = groups.len(),
                elapsed = ?started.elapsed(),
                "loaded groups"
            );
            state.groups = groups;
            state.coordination = Coordination::Active(leader_epoch);
        }
        Err(error) => {
            tracing::error!(partition = index, %error, "cannot load group state; retrying");
            state.coordination = Coordination::LoadFailed(leader_epoch);
        }
    }
}

/// Reconcile rounds on shard 0 until the broker stops: one at once (the
/// load at start), then one whenever an image is published and every
/// [`RETRY_INTERVAL`]. Holds the running loads, one per partition at
/// most; dropping one (replaced, unloaded, or with this future) cancels it.
pub async fn follow(broker: Rc<Broker>) {
    let node = BrokerId(broker.config.node_id);
    let mut published = broker.controller.image_published();
    let mut loads: HashMap<i32, glommio::Task<()>> = HashMap::new();
    loop {
        // Seen before the image is read: one published after it starts
        // another round.
        published.borrow_and_update();
        let image = broker.controller.image();
        for (index, step) in reconcile(&broker.groups, &image, node) {
            match step {
                Step::Load(leader_epoch) => {
                    let task = glommio::spawn_local(load(Rc::clone(&broker), index, leader_epoch));
                    loads.insert(index, task);
                }
                Step::Unload | Step::Keep => {
                    loads.remove(&index);
                }
            }
        }
        if !next_round(&broker, &mut published, RETRY_INTERVAL).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Leadership changed through the controller itself. The controller
    //! is a single node, so its controlled-shutdown fencing takes every
    //! partition's leadership away (no other replica to elect: another
    //! broker or none is the same to the coordinator) and its next
    //! heartbeat gives it back in a newer leader epoch. The broker's own
    //! heartbeat thread is slowed to an hour so that only the scenario
    //! fences and unfences it. What another leader writes meanwhile reaches
    //! this broker as a follower's append to its log.

    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use fjord_engine::batch::build_batch;
    use fjord_engine::shard::AppendRequest;
    use fjord_engine::TimestampMs;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        FindCoordinatorRequest, GroupId, JoinGroupRequest, OffsetCommitRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::controller::Controller;
    use crate::groups::records::{OffsetValue, RecordKey};
    use crate::groups::{append, CoordinatorEpoch, CoordinatorSettings};
    use crate::handlers::{find_coordinator, join_group, offset_commit};
    use crate::in_process::{eventually, on_shard_zero, DEADLINE};
    use crate::topics::{create_topic, ensure_consumer_offsets, on_controller};

    const GROUP: &str = "payments";
    /// The topic the group commits offsets of.
    const TOPIC: &str = "orders";

    /// Runs `scenario` on shard 0 of an in-process broker with
    /// `__consumer_offsets` of three partitions and [`TOPIC`] created, and
    /// `extra` settings; the coordinator is not running.
    fn with_broker<F, Fut>(extra: &[(&str, &str)], scenario: F) -> Result<(), String>
    where
        F: Fn(Rc<Broker>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = Result<(), String>> + 'static,
    {
        let settings: Vec<(&str, &str)> = [
            ("offsets.topic.num.partitions", "3"),
            ("broker.heartbeat.interval.ms", "3600000"),
            ("broker.session.timeout.ms", "7200000"),
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect();
        on_shard_zero(&settings, move |broker| {
            let scenario = scenario.clone();
            async move {
                ensure_consumer_offsets(&broker)
                    .await
                    .map_err(|error| error.message)?;
                create_topic(&broker, TOPIC, 1, 1, None, Vec::new())
                    .await
                    .map_err(|error| error.message)?;
                scenario(broker).await
            }
        })
    }

    /// The `__consumer_offsets` partition of [`GROUP`].
    fn group_partition(broker: &Broker) -> TopicPartition {
        TopicPartition::new(CONSUMER_OFFSETS_TOPIC, broker.groups.partition_of(GROUP))
    }

    /// The leader epoch of [`GROUP`]'s partition in the current image.
    fn image_epoch(broker: &Broker) -> Result<LeaderEpoch, String> {
        partition::state(broker, &group_partition(broker))
            .map(|state| state.leader_epoch)
            .map_err(|error| error.to_string())
    }

    /// Waits until [`GROUP`]'s partition is served in the image's leader
    /// epoch, which it returns.
    async fn until_active(broker: &Broker) -> Result<LeaderEpoch, String> {
        let index = broker.groups.partition_of(GROUP);
        let mut epoch = LeaderEpoch(-1);
        eventually("the group's partition is loaded", || {
            std::future::ready(image_epoch(broker).is_ok_and(|image| {
                epoch = image;
                broker.groups.coordination(index) == Coordination::Active(image)
            }))
        })
        .await?;
        Ok(epoch)
    }

    /// Fences this broker as a controlled shutdown does: no partition has
    /// a leader left.
    async fn lose_leadership(broker: &Broker) -> Result<(), String> {
        on_controller(broker, |controller| {
            controller.fence_for_shutdown(DEADLINE);
            Ok(())
        })
        .await
        .map_err(|error| error.message)?;
        match partition::state(broker, &group_partition(broker)) {
            Ok(state) if state.leader == BrokerId::NONE => Ok(()),
            other => Err(format!("still led after the fencing: {other:?}")),
        }
    }

    /// Unfences this broker: it leads every partition again.
    async fn regain_leadership(broker: &Broker) -> Result<(), String> {
        let fenced = on_controller(broker, Controller::heartbeat)
            .await
            .map_err(|error| error.message)?;
        if fenced {
            return Err("the heartbeat did not unfence the broker".to_owned());
        }
        Ok(())
    }

    /// Commits `offset` for [`TOPIC`]-0 as a consumer outside any group
    /// would, through the OffsetCommit handler; returns its error code.
    async fn commit(broker: &Rc<Broker>, offset: i64) -> i16 {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]);
        let response = offset_commit::handle(broker, request).await;
        response.topics[0].partitions[0].error_code
    }

    /// The offset the coordinator holds for [`GROUP`] on [`TOPIC`]-0.
    fn committed(broker: &Broker) -> Result<Option<i64>, ResponseError> {
        broker.groups.with_group(GROUP, |group| {
            group
                .and_then(|group| group.offsets.get(&(TOPIC.to_owned(), 0)))
                .map(|committed| committed.value.offset)
        })
    }

    /// The record of a commit of `offset` by [`GROUP`] for [`TOPIC`]-0.
    fn commit_record(offset: i64) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = RecordKey::Offset {
            group: GROUP.to_owned(),
            topic: TOPIC.to_owned(),
            partition: 0,
        };
        let value = OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: TimestampMs::now().0,
        };
        (key.encode(), Some(value.encode()))
    }

    /// Appends a commit of `offset` to the group's partition as a follower
    /// receives another leader's batch: past the high watermark, which
    /// the new leader's load reads up to its log end regardless.
    async fn replicate_commit(broker: &Broker, offset: i64) -> Result<(), String> {
        let (key, value) = commit_record(offset);
        let batch = build_batch(
            &[(Some(key.as_slice()), value.as_deref())],
            TimestampMs::now(),
            None,
        );
        broker
            .shard
            .append(AppendRequest {
                partition: group_partition(broker),
                batches: vec![Bytes::from(batch)],
                leader_epoch: image_epoch(broker)?,
                flush: true,
                advance_high_watermark: false,
            })
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    /// FindCoordinator's error code for [`GROUP`].
    fn find_coordinator_error(broker: &Rc<Broker>) -> i16 {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(GROUP))
            .with_key_type(0);
        find_coordinator::handle(broker, request, 3).error_code
    }

    /// The whole life of a coordinator across leadership changes: loaded
    /// when the broker leads the group's partition; `NOT_COORDINATOR` (and
    /// FindCoordinator sending clients nowhere) once it does not; read
    /// back from the log when the leadership comes back, with what
    /// another leader committed meanwhile; and a write decided in the
    /// first leadership refused in the second. A coordinator that kept
    /// serving from memory would lose that commit or write into a log it
    /// does not lead.
    #[test]
    fn groups_follow_the_leadership_of_their_partition() {
        with_broker(&[], |broker| async move {
            let coordinator = glommio::spawn_local(crate::groups::run(Rc::clone(&broker)));
            let first = until_active(&broker).await?;
            if commit(&broker, 10).await != 0 {
                return Err("a commit to the loaded coordinator failed".to_owned());
            }

            lose_leadership(&broker).await?;
            let index = broker.groups.partition_of(GROUP);
            eventually("the group's partition is unloaded", || {
                std::future::ready(
                    broker.groups.coordination(index) == Coordination::NotCoordinator,
                )
            })
            .await?;
            let not_coordinator = ResponseError::NotCoordinator.code();
            if commit(&broker, 15).await != not_coordinator {
                return Err("a commit without leadership was not NOT_COORDINATOR".to_owned());
            }
            if committed(&broker) != Err(ResponseError::NotCoordinator) {
                return Err("the unloaded group is still served".to_owned());
            }
            if find_coordinator_error(&broker) != ResponseError::CoordinatorNotAvailable.code() {
                return Err("FindCoordinator names a coordinator without a leader".to_owned());
            }
            replicate_commit(&broker, 20).await?;

            regain_leadership(&broker).await?;
            let second = until_active(&broker).await?;
            if second <= first {
                return Err(format!("regained in epoch {second:?}, after {first:?}"));
            }
            if committed(&broker) != Ok(Some(20)) {
                return Err(format!(
                    "after the reload the group holds {:?}, not the commit made meanwhile",
                    committed(&broker)
                ));
            }
            if find_coordinator_error(&broker) != 0 {
                return Err("FindCoordinator does not name the new leader".to_owned());
            }
            let stale = CoordinatorEpoch {
                partition: index,
                leader_epoch: first,
            };
            if append(&broker, stale, &[commit_record(99)]).await
                != Err(ResponseError::NotCoordinator)
            {
                return Err("a write of the first leadership was not refused".to_owned());
            }
            if commit(&broker, 30).await != 0 || committed(&broker) != Ok(Some(30)) {
                return Err("the reloaded coordinator does not take commits".to_owned());
            }
            drop(coordinator);
            Ok(())
        })
        .unwrap();
    }

    /// A JoinGroup waiting for its join phase (here a minute's initial
    /// rebalance delay) answers `NOT_COORDINATOR` as soon as the partition
    /// is lost, so its client finds the new coordinator at once instead
    /// of waiting out the phase against a broker that no longer holds the
    /// group.
    #[test]
    fn waiting_members_answer_not_coordinator_once_the_partition_is_lost() {
        let extra = [("group.initial.rebalance.delay.ms", "60000")];
        with_broker(&extra, |broker| async move {
            let coordinator = glommio::spawn_local(crate::groups::run(Rc::clone(&broker)));
            until_active(&broker).await?;
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
                .with_session_timeout_ms(30_000)
                .with_rebalance_timeout_ms(60_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))]);
            let join = glommio::spawn_local({
                let broker = Rc::clone(&broker);
                async move { join_group::handle(&broker, request, 3, "test", None).await }
            });
            eventually("the member waits in the join phase", || {
                std::future::ready(
                    broker
                        .groups
                        .with_group(GROUP, |group| {
                            group.is_some_and(|group| group.members.len() == 1)
                        })
                        .unwrap_or(false),
                )
            })
            .await?;
            let lost = Instant::now();
            lose_leadership(&broker).await?;
            let response = join.await;
            if response.error_code != ResponseError::NotCoordinator.code() {
                return Err(format!("the join answered {}", response.error_code));
            }
            if lost.elapsed() > Duration::from_secs(10) {
                return Err(format!("the join was woken after {:?}", lost.elapsed()));
            }
            drop(coordinator);
            Ok(())
        })
        .unwrap();
    }

    /// The first round is the load at start, and a load installs what it
    /// read only in the leadership it was started for: one overtaken by a
    /// newer round, or whose epoch the image no longer names, leaves the
    /// partition loading for the round that follows, rather than serving
    /// groups read from a log another leader may have written since.
    #[test]
    fn a_load_overtaken_by_a_leadership_change_installs_nothing() {
        with_broker(&[], |broker| async move {
            let index = broker.groups.partition_of(GROUP);
            let epoch = image_epoch(&broker)?;
            replicate_commit(&broker, 7).await?;
            let node = BrokerId(broker.config.node_id);
            let steps = reconcile(&broker.groups, &broker.controller.image(), node);
            if !steps.contains(&(index, Step::Load(epoch))) || steps.len() != 3 {
                return Err(format!("the first round's steps: {steps:?}"));
            }

            let newer = LeaderEpoch(epoch.0 + 2);
            broker.groups.lock_partition(index).coordination = Coordination::Loading(newer);
            load(Rc::clone(&broker), index, epoch).await;
            if broker.groups.coordination(index) != Coordination::Loading(newer) {
                return Err("a load of a past leadership was installed".to_owned());
            }
            load(Rc::clone(&broker), index, newer).await;
            if broker.groups.coordination(index) != Coordination::Loading(newer) {
                return Err("a load of an epoch the image does not name was installed".to_owned());
            }

            broker.groups.lock_partition(index).coordination = Coordination::Loading(epoch);
            load(Rc::clone(&broker), index, epoch).await;
            if committed(&broker) != Ok(Some(7)) {
                return Err(format!("the load holds {:?}", committed(&broker)));
            }
            Ok(())
        })
        .unwrap();
    }

    /// A coordinator of one partition, held here in `held` with [`GROUP`]
    /// in it; returns the group's change event.
    fn coordinator_holding(held: Coordination) -> (GroupCoordinator, Arc<event_listener::Event>) {
        let settings = [("offsets.topic.num.partitions".to_owned(), "1".to_owned())];
        let config = BrokerConfig::load(&settings, &[]).unwrap();
        let coordinator = GroupCoordinator::new(CoordinatorSettings::from_config(&config));
        let group = crate::groups::group::Group::new(GROUP.to_owned());
        let changed = Arc::clone(&group.changed);
        let mut state = coordinator.lock_partition(0);
        state.coordination = held;
        state.groups.insert(GROUP.to_owned(), group);
        drop(state);
        (coordinator, changed)
    }

    /// An image where brokers 1 and 2 replicate the one partition of
    /// `__consumer_offsets`, led by `leader` in `leader_epoch`.
    fn offsets_led_by(leader: i32, leader_epoch: i32) -> MetadataImage {
        use crate::metadata::records::{
            BrokerEpoch, MetadataRecord, PartitionEpoch, PartitionRecord, RegisterBrokerRecord,
            TopicId, TopicRecord,
        };
        let register = |id: i32| {
            MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: BrokerId(id),
                incarnation_id: [id as u8; 16],
                broker_epoch: BrokerEpoch(1),
                endpoints: Vec::new(),
                rack: None,
                fenced: false,
            })
        };
        let topic_id = TopicId([3; 16]);
        let replicas = vec![BrokerId(1), BrokerId(2)];
        let records = [
            register(1),
            register(2),
            MetadataRecord::Topic(TopicRecord {
                name: CONSUMER_OFFSETS_TOPIC.to_owned(),
                topic_id,
            }),
            MetadataRecord::Partition(PartitionRecord {
                partition_id: 0,
                topic_id,
                isr: replicas.clone(),
                replicas,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader: BrokerId(leader),
                leader_epoch: LeaderEpoch(leader_epoch),
                partition_epoch: PartitionEpoch(0),
            }),
        ];
        MetadataImage::default().apply(&records).unwrap()
    }

    /// Broker 1 loses the partition to broker 2: its groups go at once,
    /// their waiters are woken (not left to find out at their next
    /// timer), and requests get `NOT_COORDINATOR`; leading it again in a
    /// later epoch starts a load, `COORDINATOR_LOAD_IN_PROGRESS` until it
    /// ends.
    #[test]
    fn a_partition_led_elsewhere_is_dropped_and_its_waiters_woken() {
        let node = BrokerId(1);
        let (coordinator, changed) = coordinator_holding(Coordination::Active(LeaderEpoch(3)));
        let waiter = changed.listen();
        let steps = reconcile(&coordinator, &offsets_led_by(2, 4), node);
        assert_eq!(steps, [(0, Step::Unload)]);
        assert!(changed.is_notified(), "the waiter was not woken");
        drop(waiter);
        assert_eq!(
            coordinator.with_group(GROUP, |group| group.is_some()),
            Err(ResponseError::NotCoordinator)
        );
        assert!(reconcile(&coordinator, &offsets_led_by(2, 4), node).is_empty());

        let steps = reconcile(&coordinator, &offsets_led_by(1, 5), node);
        assert_eq!(steps, [(0, Step::Load(LeaderEpoch(5)))]);
        assert_eq!(
            coordinator.with_group(GROUP, |group| group.is_some()),
            Err(ResponseError::CoordinatorLoadInProgress)
        );
    }

    /// Kafka's steps: a leadership unchanged is kept, a new or regained
    /// one loaded (also after a failed load), one lost unloaded.
    #[test]
    fn each_round_loads_what_is_newly_led_and_unloads_what_is_not() {
        let (one, two) = (LeaderEpoch(1), LeaderEpoch(2));
        let cases = [
            (Coordination::Starting, Some(one), Step::Load(one)),
            (Coordination::Starting, None, Step::Unload),
            (Coordination::NotCoordinator, None, Step::Keep),
            (Coordination::NotCoordinator, Some(two), Step::Load(two)),
            (Coordination::Loading(one), Some(one), Step::Keep),
            (Coordination::Loading(one), Some(two), Step::Load(two)),
            (Coordination::Loading(one), None, Step::Unload),
            (Coordination::LoadFailed(one), Some(one), Step::Load(one)),
            (Coordination::LoadFailed(one), None, Step::Unload),
            (Coordination::Active(one), Some(one), Step::Keep),
            (Coordination::Active(one), Some(two), Step::Load(two)),
            (Coordination::Active(one), None, Step::Unload),
        ];
        for (held, led_in, expected) in cases {
            assert_eq!(step(held, led_in), expected, "{held:?} led in {led_in:?}");
        }
    }
}
