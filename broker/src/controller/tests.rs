use std::path::{Path, PathBuf};

use super::*;
use crate::controller::alter_partition::IsrProposal;
use crate::controller::legacy::{LegacyMetadata, LegacyTopic};
use crate::metadata::records::{LeaderRecoveryState, RegisterBrokerRecord};

/// A data directory for controllers, removed when dropped.
struct Scratch {
    dir: tempfile::TempDir,
    settings: Vec<(String, String)>,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = vec![("log.dirs".to_owned(), dir.path().display().to_string())];
        Self { dir, settings }
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> BrokerConfig {
        BrokerConfig::load(&self.settings, &[]).unwrap()
    }

    fn controller(&self) -> std::sync::Arc<Controller> {
        Controller::open(&self.config()).unwrap()
    }

    fn log_dir(&self) -> PathBuf {
        self.config().metadata_log_dir.join(METADATA_LOG_DIR_NAME)
    }

    /// The names of the files in the metadata log directory, sorted.
    fn log_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.log_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// The image without this start's broker registration and the leader and
/// partition epochs, which differ between starts by design (a start
/// registers anew, fenced, which takes this broker's leaderships away,
/// and is then unfenced, which gives them back: each a new epoch).
fn without_start_effects(image: &MetadataImage) -> MetadataImage {
    let mut image = image.clone();
    image.brokers.clear();
    for topic in image.topics.values_mut() {
        let topic = std::sync::Arc::make_mut(topic);
        for partition in &mut topic.partitions {
            partition.leader_epoch = LeaderEpoch(0);
            partition.partition_epoch = PartitionEpoch(0);
        }
    }
    image
}

#[test]
fn altered_topic_configs_survive_reopening_the_controller() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    controller
        .create_topic("t", 1, 1, None, pairs(&[("segment.ms", "1000")]))
        .unwrap();
    let config = controller
        .alter_topic_configs("t", false, |_| {
            Ok(pairs(&[
                ("retention.ms", "5000"),
                ("cleanup.policy", "compact"),
            ]))
        })
        .unwrap();
    assert_eq!(config.retention_ms, 5000);
    assert_eq!(config.segment_ms, LogConfig::default().segment_ms);
    drop(controller);
    let reopened = scratch.controller();
    assert_eq!(
        reopened.image().topics["t"].configs,
        pairs(&[("cleanup.policy", "compact"), ("retention.ms", "5000")])
    );
    assert_eq!(reopened.log_config_for("t").retention_ms, 5000);
    assert_eq!(
        reopened.topic_config("t", "cleanup.policy").as_deref(),
        Some("compact")
    );
    assert_eq!(reopened.topic_config("t", "segment.ms"), None);
}

#[test]
fn rejected_or_validate_only_alterations_change_nothing() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    controller
        .create_topic("t", 1, 1, None, Vec::new())
        .unwrap();
    let code = |result: Result<LogConfig, MetadataError>| result.unwrap_err().code;
    let bad = code(
        controller.alter_topic_configs("t", false, |_| Ok(pairs(&[("retention.ms", "soon")]))),
    );
    assert_eq!(bad, ResponseError::InvalidConfig.code());
    let unknown_key =
        code(controller.alter_topic_configs("t", false, |_| Ok(pairs(&[("no.such.config", "1")]))));
    assert_eq!(unknown_key, ResponseError::InvalidConfig.code());
    let twice = code(controller.alter_topic_configs("t", false, |_| {
        Ok(pairs(&[("retention.ms", "1"), ("retention.ms", "2")]))
    }));
    assert_eq!(twice, ResponseError::InvalidRequest.code());
    let missing = code(controller.alter_topic_configs("nope", false, |_| Ok(Vec::new())));
    assert_eq!(missing, ResponseError::UnknownTopicOrPartition.code());
    let checked = controller
        .alter_topic_configs("t", true, |_| Ok(pairs(&[("retention.ms", "7")])))
        .unwrap();
    assert_eq!(checked.retention_ms, 7);
    assert!(controller.image().topics["t"].configs.is_empty());
    drop(controller);
    assert!(scratch.controller().image().topics["t"].configs.is_empty());
}

#[test]
fn partitions_only_grow_and_the_new_count_is_persisted() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    controller
        .create_topic("t", 2, 1, None, Vec::new())
        .unwrap();
    for count in [1, 2, PARTITIONS_MAX + 1] {
        let error = controller
            .add_partitions("t", count, None, false)
            .unwrap_err();
        assert_eq!(
            error.code,
            ResponseError::InvalidPartitions.code(),
            "{count}"
        );
    }
    assert_eq!(controller.add_partitions("t", 5, None, true).unwrap(), 2);
    assert_eq!(controller.image().topics["t"].partition_count(), 2);
    assert_eq!(controller.add_partitions("t", 5, None, false).unwrap(), 2);
    drop(controller);
    let reopened = scratch.controller();
    let topic = &reopened.image().topics["t"];
    assert_eq!(topic.partition_count(), 5);
    let node = BrokerId(reopened.node.0);
    for partition in &topic.partitions {
        assert_eq!(partition.replicas, [node]);
        assert_eq!(partition.isr, [node]);
        assert_eq!(partition.leader, node);
        // The reopened controller's registration fenced the broker's
        // previous one (leader none) and its heartbeat unfenced it (leader
        // back): two leader changes since creation.
        assert_eq!(partition.leader_epoch, LeaderEpoch(2));
        assert_eq!(partition.partition_epoch, PartitionEpoch(2));
    }
    let missing = reopened.add_partitions("nope", 3, None, false).unwrap_err();
    assert_eq!(missing.code, ResponseError::UnknownTopicOrPartition.code());
}

#[test]
fn deleted_topics_stay_deleted_and_their_name_can_be_reused() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    let first = controller
        .create_topic("t", 3, 1, None, pairs(&[("retention.ms", "5")]))
        .unwrap();
    let deleted = controller.delete_topic("t").unwrap();
    assert_eq!(deleted.id, first.id);
    assert_eq!(
        controller.delete_topic("t").unwrap_err().code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let second = controller
        .create_topic("t", 1, 1, None, Vec::new())
        .unwrap();
    assert_ne!(second.id, first.id);
    drop(controller);
    let image = scratch.controller().image();
    assert_eq!(image.topics["t"].id, second.id);
    assert!(image.topics["t"].configs.is_empty());
    assert!(image.topic_by_id(first.uuid()).is_none());
}

#[test]
fn the_metadata_topic_name_is_refused() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    let error = controller
        .create_topic(
            fjord_engine::types::CLUSTER_METADATA_TOPIC,
            1,
            1,
            None,
            Vec::new(),
        )
        .unwrap_err();
    assert_eq!(error.code, ResponseError::InvalidRequest.code());
}

/// Guards against handing out a producer id twice: an id whose block was
/// not durable, or a block reused after a restart, would let a new producer
/// collide with an old one's sequences.
#[test]
fn producer_ids_are_never_reused_across_restarts() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    let first: Vec<i64> = (0..3)
        .map(|_| controller.allocate_producer_id().unwrap())
        .collect();
    assert_eq!(first, [0, 1, 2]);
    assert_eq!(
        controller.image().next_producer_id,
        ProducerId(PRODUCER_ID_BLOCK)
    );
    drop(controller);
    let reopened = scratch.controller();
    assert_eq!(reopened.allocate_producer_id().unwrap(), PRODUCER_ID_BLOCK);
    for _ in 1..PRODUCER_ID_BLOCK {
        reopened.allocate_producer_id().unwrap();
    }
    assert_eq!(
        reopened.allocate_producer_id().unwrap(),
        2 * PRODUCER_ID_BLOCK
    );
    assert_eq!(
        reopened.image().next_producer_id,
        ProducerId(3 * PRODUCER_ID_BLOCK)
    );
}

#[test]
fn each_start_registers_the_broker_with_a_larger_epoch() {
    let scratch = Scratch::new()
        .with("node.id", "7")
        .with("advertised.listeners", "PLAINTEXT://broker7:9093");
    let first = scratch.controller().image().brokers[&BrokerId(7)].clone();
    assert_eq!(first.endpoints.len(), 1);
    assert_eq!(first.endpoints[0].host, "broker7");
    assert_eq!(first.endpoints[0].port, 9093);
    assert!(!first.fenced);
    let second = scratch.controller().image().brokers[&BrokerId(7)].clone();
    assert!(second.epoch > first.epoch);
    assert_ne!(second.incarnation_id, first.incarnation_id);
}

/// Guards against changes living only in memory: every change goes through
/// the quorum's log (its `.raftlog` segments and vote, in the metadata log
/// directory), and a reopened controller rebuilds the same image from it.
#[test]
fn changes_are_committed_to_the_quorum_log_and_survive_reopening() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    // The broker registered with its shard count, and is unfenced.
    let config = scratch.config();
    let registration = &controller.image().brokers[&BrokerId(config.node_id)];
    assert_eq!(registration.cores, u32::try_from(config.cores).ok());
    assert!(!registration.fenced);
    for index in 0..4 {
        controller
            .create_topic(&format!("t{index}"), 3, 1, None, Vec::new())
            .unwrap();
    }
    let image = controller.image();
    drop(controller);
    let files = scratch.log_files();
    assert!(files.contains(&"raft.vote".to_owned()), "{files:?}");
    assert!(
        files.iter().any(|name| name.ends_with(".raftlog")),
        "{files:?}"
    );
    let reopened = scratch.controller();
    assert_eq!(
        without_start_effects(&reopened.image()),
        without_start_effects(&image)
    );
}

/// The local metadata log of the version before the quorum, as it wrote
/// it in `dir`: broker 1 registered at epoch 57, topic `orders` (2
/// partitions, `retention.ms=5000`), producer ids up to 5000 taken; part
/// of it in a snapshot, the rest in a segment after it. Returns its image.
fn write_local_metadata_log(dir: &Path) -> MetadataImage {
    let registration = MetadataRecord::RegisterBroker(RegisterBrokerRecord {
        broker_id: BrokerId(1),
        incarnation_id: *Uuid::new_v4().as_bytes(),
        broker_epoch: BrokerEpoch(57),
        endpoints: Vec::new(),
        rack: None,
        fenced: false,
    });
    let registered = MetadataImage::default()
        .apply(std::slice::from_ref(&registration))
        .unwrap();
    let topic_id = TopicId::from(Uuid::new_v4());
    let mut topic = vec![MetadataRecord::Topic(TopicRecord {
        name: "orders".to_owned(),
        topic_id,
    })];
    topic.extend(new_partitions(&registered, topic_id, 0..2, 1, None).unwrap());
    topic.push(MetadataRecord::Config(ConfigRecord {
        resource_type: ConfigResourceType::Topic,
        resource_name: "orders".to_owned(),
        name: "retention.ms".to_owned(),
        value: Some("5000".to_owned()),
    }));
    let producer_ids = MetadataRecord::ProducerIds(ProducerIdsRecord {
        broker_id: BrokerId(1),
        broker_epoch: BrokerEpoch(57),
        next_producer_id: ProducerId(5000),
    });
    let (mut log, _) = MetadataLog::open(dir).unwrap();
    log.append(&[registration]).unwrap();
    log.append(&topic).unwrap();
    let image = registered.apply(&topic).unwrap();
    log.snapshot(&image.records()).unwrap();
    log.append(std::slice::from_ref(&producer_ids)).unwrap();
    image.apply(&[producer_ids]).unwrap()
}

/// The names of the local metadata log's files among `files`.
fn local_log_files(files: &[String]) -> Vec<&String> {
    files
        .iter()
        .filter(|name| {
            name.strip_suffix(".log")
                .or_else(|| name.strip_suffix(".snapshot"))
                .is_some_and(|digits| digits.len() == 20)
        })
        .collect()
}

/// Guards against losing topics, configs or producer ids when a data
/// directory written by the version before the quorum starts: its local
/// metadata log is committed to the quorum, and removed only after that.
#[test]
fn a_local_metadata_log_is_upgraded_into_the_quorum() {
    let scratch = Scratch::new();
    let written = write_local_metadata_log(&scratch.log_dir());
    assert_eq!(local_log_files(&scratch.log_files()).len(), 2);
    let controller = scratch.controller();
    assert!(
        local_log_files(&scratch.log_files()).is_empty(),
        "{:?}",
        scratch.log_files()
    );
    let image = controller.image();
    assert_eq!(
        without_start_effects(&image),
        without_start_effects(&written)
    );
    assert_eq!(image.topics["orders"].config("retention.ms"), Some("5000"));
    assert!(image.brokers[&BrokerId(1)].epoch > BrokerEpoch(57));
    assert_eq!(controller.allocate_producer_id().unwrap(), 5000);
    drop(controller);
    let reopened = scratch.controller();
    assert_eq!(reopened.image().topics["orders"].partition_count(), 2);
    assert_eq!(reopened.image().next_producer_id, ProducerId(6000));
}

/// A start that committed the local log to the quorum but crashed before
/// removing it must not commit it again (its topics would exist twice, or
/// come back after a delete): the files are only removed.
#[test]
fn a_local_metadata_log_left_after_its_upgrade_is_only_removed() {
    let scratch = Scratch::new();
    write_local_metadata_log(&scratch.log_dir());
    let controller = scratch.controller();
    controller.delete_topic("orders").unwrap();
    drop(controller);
    write_local_metadata_log(&scratch.log_dir());
    let reopened = scratch.controller();
    assert!(local_log_files(&scratch.log_files()).is_empty());
    assert!(reopened.image().topics.is_empty());
    assert_eq!(reopened.image().next_producer_id, ProducerId(5000));
}

#[test]
fn metadata_log_dir_places_the_log_outside_log_dirs() {
    let elsewhere = tempfile::tempdir().unwrap();
    let scratch = Scratch::new().with("metadata.log.dir", &elsewhere.path().display().to_string());
    scratch
        .controller()
        .create_topic("t", 1, 1, None, Vec::new())
        .unwrap();
    assert!(elsewhere.path().join(METADATA_LOG_DIR_NAME).is_dir());
    assert!(!scratch.path().join(METADATA_LOG_DIR_NAME).exists());
    assert!(scratch.controller().image().topics.contains_key("t"));
}

/// A `cluster-metadata.snapshot` written by the controller before the
/// metadata log (fjord at commit b5e8035): topics `orders` (3 partitions,
/// `retention.ms=5000`, `cleanup.policy=compact`), `__consumer_offsets` (50
/// partitions, `cleanup.policy=compact`, `segment.bytes=104857600`) and
/// `plain` (created with 1 partition, grown to 2), after producer ids 0 and
/// 1 were handed out from the block ending at 1000.
const LEGACY_FIXTURE: &[u8] = include_bytes!("testdata/cluster-metadata-fjmd-v1.snapshot");

/// Guards against losing topics, configs or producer ids when a data
/// directory of the previous format is started: it is converted into the
/// metadata log, and the old file is removed only after that.
#[test]
fn a_legacy_metadata_file_is_upgraded_in_place() {
    let scratch = Scratch::new();
    let legacy_path = scratch.path().join(legacy::LEGACY_METADATA_FILE);
    std::fs::write(&legacy_path, LEGACY_FIXTURE).unwrap();
    let controller = scratch.controller();
    assert!(!legacy_path.exists());
    let image = controller.image();
    let names: Vec<&str> = image.topics.keys().map(String::as_str).collect();
    assert_eq!(names, ["__consumer_offsets", "orders", "plain"]);
    let orders = &image.topics["orders"];
    assert_eq!(
        orders.uuid().to_string(),
        "f61437c2-dc4f-40ff-bd99-0178d65d16f6"
    );
    assert_eq!(orders.partition_count(), 3);
    assert_eq!(
        orders.configs,
        pairs(&[("cleanup.policy", "compact"), ("retention.ms", "5000")])
    );
    assert_eq!(image.topics["__consumer_offsets"].partition_count(), 50);
    assert_eq!(
        image.topics["__consumer_offsets"].config("segment.bytes"),
        Some("104857600")
    );
    assert_eq!(image.topics["plain"].partition_count(), 2);
    assert!(image.topics["plain"].configs.is_empty());
    let plain_id = image.topics["plain"].uuid();
    assert_eq!(
        image.topic_by_id(plain_id).map(|topic| topic.name.as_str()),
        Some("plain")
    );
    assert_eq!(controller.log_config_for("orders").retention_ms, 5000);
    // Ids 0 and 1 went out before the upgrade: the next block starts after
    // the old one.
    assert_eq!(controller.allocate_producer_id().unwrap(), 1000);
    drop(controller);
    let mut expected = without_start_effects(&image);
    expected.next_producer_id = ProducerId(2000);
    assert_eq!(
        without_start_effects(&scratch.controller().image()),
        expected
    );
}

/// A start that converted the legacy file but crashed before removing it
/// must not convert it again (the topics would exist twice).
#[test]
fn a_legacy_file_left_after_its_conversion_is_only_removed() {
    let scratch = Scratch::new();
    let legacy_path = scratch.path().join(legacy::LEGACY_METADATA_FILE);
    let legacy_metadata = LegacyMetadata {
        topics: vec![LegacyTopic {
            name: "t".to_owned(),
            id: *Uuid::new_v4().as_bytes(),
            partitions: 2,
            configs: pairs(&[("retention.ms", "9")]),
        }],
        producer_id_block_end: 3000,
    };
    std::fs::write(&legacy_path, legacy::encode(&legacy_metadata)).unwrap();
    let converted = scratch.controller().image();
    std::fs::write(&legacy_path, legacy::encode(&legacy_metadata)).unwrap();
    let reopened = scratch.controller();
    assert!(!legacy_path.exists());
    assert_eq!(
        without_start_effects(&reopened.image()),
        without_start_effects(&converted)
    );
    assert_eq!(
        reopened.image().topics["t"].config("retention.ms"),
        Some("9")
    );
    assert_eq!(reopened.allocate_producer_id().unwrap(), 3000);
}

#[test]
fn a_corrupt_legacy_file_fails_the_start_and_is_kept() {
    let scratch = Scratch::new();
    let legacy_path = scratch.path().join(legacy::LEGACY_METADATA_FILE);
    let mut bytes = LEGACY_FIXTURE.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&legacy_path, &bytes).unwrap();
    let error = Controller::open(&scratch.config()).err().unwrap();
    assert!(
        matches!(
            error,
            OpenError::CorruptLegacy {
                source: Corruption::CrcMismatch { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("CRC"), "{error}");
    assert!(legacy_path.exists());
}

#[test]
fn the_replication_factor_is_checked_against_the_unfenced_brokers() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    for (factor, message) in [
        (2, "Replication factor: 2 larger than available brokers: 1."),
        (
            0,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ),
    ] {
        let error = controller
            .create_topic("t", 1, factor, None, Vec::new())
            .unwrap_err();
        assert_eq!(error.code, ResponseError::InvalidReplicationFactor.code());
        assert_eq!(error.message, message);
        let validated = controller.validate_topic("t", 1, factor, &[]).unwrap_err();
        assert_eq!(validated.message, message);
    }
    assert!(controller.image().topics.is_empty());
}

#[test]
fn producer_id_blocks_need_the_current_broker_epoch_and_never_overlap() {
    let scratch = Scratch::new();
    let controller = scratch.controller();
    let node = BrokerId(controller.node.0);
    let epoch = controller.image().brokers[&node].epoch;
    let stale = controller
        .allocate_producer_ids(node, BrokerEpoch(epoch.0 - 1))
        .unwrap_err();
    assert_eq!(stale.code, ResponseError::StaleBrokerEpoch.code());
    let unknown = controller
        .allocate_producer_ids(BrokerId(99), epoch)
        .unwrap_err();
    assert_eq!(unknown.code, ResponseError::StaleBrokerEpoch.code());

    let own = controller.allocate_producer_id().unwrap();
    let block = controller.allocate_producer_ids(node, epoch).unwrap();
    assert_eq!(block.end - block.start, PRODUCER_ID_BLOCK);
    assert!(!block.contains(&own), "{own} handed out twice");
    assert!(block.start > own);
    drop(controller);
    let reopened = scratch.controller();
    let after_restart = reopened.allocate_producer_id().unwrap();
    assert!(
        after_restart >= block.end,
        "{after_restart} reuses {block:?}"
    );
}

/// Brokers 2.. of a cluster whose controller is the test's node 1: each
/// registered with the controller and unfenced, as its own heartbeats
/// would make it. Sessions last long enough that expiry never interferes.
struct Cluster {
    _scratch: Scratch,
    controller: std::sync::Arc<Controller>,
    epochs: BTreeMap<i32, BrokerEpoch>,
}

impl Cluster {
    fn new(others: &[i32], settings: &[(&str, &str)]) -> Self {
        let mut scratch = Scratch::new().with("broker.session.timeout.ms", "600000");
        for (key, value) in settings {
            scratch = scratch.with(key, value);
        }
        let controller = scratch.controller();
        let mut cluster = Self {
            _scratch: scratch,
            controller,
            epochs: BTreeMap::new(),
        };
        for &broker in others {
            cluster.register(broker);
            cluster.heartbeat(broker, false);
        }
        cluster
    }

    fn register(&mut self, broker: i32) {
        let change = Change::RegisterBroker {
            broker,
            incarnation_id: *Uuid::new_v4().as_bytes(),
            endpoints: Vec::new(),
            rack: None,
            cores: 1,
        };
        let answer = self.controller.change(&change, CHANGE_TIMEOUT).unwrap();
        let Done::BrokerEpoch(epoch) = answer.done else {
            panic!("{answer:?}");
        };
        self.epochs.insert(broker, BrokerEpoch(epoch));
    }

    /// Broker `broker`'s heartbeat: it asks to be fenced, or to be unfenced.
    fn heartbeat(&self, broker: i32, want_fence: bool) {
        let change = Change::Heartbeat {
            broker,
            epoch: self.epochs[&broker].0,
            caught_up: true,
            want_fence,
        };
        self.controller.change(&change, CHANGE_TIMEOUT).unwrap();
        let fenced = self.controller.image().brokers[&BrokerId(broker)].fenced;
        assert_eq!(fenced, want_fence, "broker {broker}");
    }

    fn create(&self, name: &str, assignment: &[&[i32]], configs: &[(&str, &str)]) {
        let assignment: Vec<Vec<BrokerId>> = assignment
            .iter()
            .map(|replicas| replicas.iter().copied().map(BrokerId).collect())
            .collect();
        let count = i32::try_from(assignment.len()).unwrap();
        let factor = i16::try_from(assignment[0].len()).unwrap();
        self.controller
            .create_topic(name, count, factor, Some(&assignment), pairs(configs))
            .unwrap();
    }

    fn partition(&self, name: &str, index: i32) -> PartitionImage {
        self.controller.image().topics[name]
            .partition(index)
            .unwrap()
            .clone()
    }

    /// A proposal of `isr` for `name`-`index` from its current state.
    fn proposal(&self, name: &str, index: i32, isr: &[i32]) -> IsrProposal {
        let partition = self.partition(name, index);
        IsrProposal {
            topic: name.to_owned(),
            partition: index,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr: isr.iter().copied().map(BrokerId).collect(),
            broker_epochs: BTreeMap::new(),
            leader_recovery_state: LeaderRecoveryState::Recovered,
        }
    }

    /// `proposal` from broker `broker` (another than this node).
    fn alter_partition_as(&self, broker: i32, proposal: &IsrProposal) -> Result<(), i16> {
        self.alter_partition_with_epoch(broker, self.epochs[&broker], proposal)
    }

    /// `proposal` from broker `broker` with registration epoch `epoch`.
    fn alter_partition_with_epoch(
        &self,
        broker: i32,
        epoch: BrokerEpoch,
        proposal: &IsrProposal,
    ) -> Result<(), i16> {
        let change = Change::AlterPartition {
            broker,
            epoch: epoch.0,
            proposal: proposal.into(),
        };
        self.controller
            .change(&change, CHANGE_TIMEOUT)
            .map(|_| ())
            .map_err(|refusal| refusal.code)
    }

    fn shut_down(&self, broker: i32) -> Done {
        let change = Change::ControlledShutdown {
            broker,
            epoch: self.epochs[&broker].0,
        };
        self.controller
            .change(&change, CHANGE_TIMEOUT)
            .unwrap()
            .done
    }
}

fn ids(list: &[i32]) -> Vec<BrokerId> {
    list.iter().copied().map(BrokerId).collect()
}

const SOON: Duration = Duration::from_secs(10);

/// Guards against an ISR change committed from a stale view (undoing a
/// newer leader's or controller's decision), from a broker that does not
/// lead, or that lets in a broker that cannot follow.
#[test]
fn alter_partition_commits_the_leaders_isr_and_refuses_what_kafka_refuses() {
    let cluster = Cluster::new(&[2, 3, 4], &[]);
    let controller = &cluster.controller;
    cluster.create("t", &[&[1, 2, 3]], &[]);
    cluster.create("theirs", &[&[2, 1]], &[]);
    let code = |result: Result<PartitionImage, MetadataError>| result.unwrap_err().code;

    let shrunk = controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    assert_eq!(shrunk.isr, ids(&[1, 2]));
    assert_eq!(shrunk.leader, BrokerId(1));
    assert_eq!(shrunk.leader_epoch, LeaderEpoch(0));
    assert_eq!(shrunk.partition_epoch, PartitionEpoch(1));
    assert_eq!(cluster.partition("t", 0), shrunk);

    let mut stale = cluster.proposal("t", 0, &[1]);
    stale.partition_epoch = PartitionEpoch(0);
    assert_eq!(
        code(controller.alter_partition(&stale, SOON)),
        ResponseError::InvalidUpdateVersion.code()
    );
    let mut fenced_epoch = cluster.proposal("t", 0, &[1]);
    fenced_epoch.leader_epoch = LeaderEpoch(-1);
    assert_eq!(
        code(controller.alter_partition(&fenced_epoch, SOON)),
        ResponseError::FencedLeaderEpoch.code()
    );
    for isr in [&[][..], &[2], &[1, 2, 1]] {
        assert_eq!(
            code(controller.alter_partition(&cluster.proposal("t", 0, isr), SOON)),
            ResponseError::InvalidRequest.code(),
            "{isr:?}"
        );
    }
    // 4 is no replica; 3 is fenced.
    cluster.heartbeat(3, true);
    for isr in [&[1, 2, 4][..], &[1, 2, 3]] {
        assert_eq!(
            code(controller.alter_partition(&cluster.proposal("t", 0, isr), SOON)),
            ResponseError::IneligibleReplica.code(),
            "{isr:?}"
        );
    }
    assert_eq!(
        code(controller.alter_partition(&cluster.proposal("theirs", 0, &[1]), SOON)),
        ResponseError::NotLeaderOrFollower.code()
    );
    let mut unknown = cluster.proposal("t", 0, &[1]);
    unknown.partition = 3;
    assert_eq!(
        code(controller.alter_partition(&unknown, SOON)),
        ResponseError::UnknownTopicOrPartition.code()
    );
    unknown.topic = "nope".to_owned();
    unknown.partition = 0;
    assert_eq!(
        code(controller.alter_partition(&unknown, SOON)),
        ResponseError::UnknownTopicOrPartition.code()
    );
    let previous_registration = BrokerEpoch(cluster.epochs[&2].0 - 1);
    assert_eq!(
        cluster.alter_partition_with_epoch(
            2,
            previous_registration,
            &cluster.proposal("theirs", 0, &[2])
        ),
        Err(ResponseError::StaleBrokerEpoch.code())
    );
    assert_eq!(cluster.partition("t", 0), shrunk, "refusals change nothing");

    // The same ISR again commits nothing; a live replica may join.
    let same = controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    assert_eq!(same, shrunk);
    cluster.heartbeat(3, false);
    let grown = controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2, 3]), SOON)
        .unwrap();
    assert_eq!(grown.isr, ids(&[1, 2, 3]));
    assert_eq!(grown.partition_epoch, PartitionEpoch(2));
    // Nor one in controlled shutdown: it is leaving.
    assert_eq!(
        cluster.shut_down(3),
        Done::ControlledShutdown {
            leaderships_left: 0
        }
    );
    assert_eq!(cluster.partition("t", 0).isr, ids(&[1, 2]));
    assert_eq!(
        code(controller.alter_partition(&cluster.proposal("t", 0, &[1, 2, 3]), SOON)),
        ResponseError::IneligibleReplica.code()
    );
}

/// Guards against an ISR expansion that adds a replica which restarted
/// after the leader saw it catch up (KIP-903): the new incarnation may
/// have lost unflushed records the old one fetched, so it must catch up
/// again under its new broker epoch before it may join.
#[test]
fn alter_partition_refuses_a_joining_replica_of_another_broker_epoch() {
    let mut cluster = Cluster::new(&[2, 3], &[]);
    cluster.create("t", &[&[1, 2, 3]], &[]);
    let code = |result: Result<PartitionImage, MetadataError>| result.unwrap_err().code;
    cluster
        .controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    let old_epoch = cluster.epochs[&3];
    // 3 restarts: its old session ends (it asks to be fenced as it
    // stops), and it registers again.
    cluster.heartbeat(3, true);
    cluster.register(3);
    cluster.heartbeat(3, false);
    let new_epoch = cluster.epochs[&3];
    assert!(new_epoch > old_epoch);

    let mut caught_up_before_restart = cluster.proposal("t", 0, &[1, 2, 3]);
    caught_up_before_restart.broker_epochs = BTreeMap::from([(BrokerId(3), old_epoch)]);
    assert_eq!(
        code(
            cluster
                .controller
                .alter_partition(&caught_up_before_restart, SOON)
        ),
        ResponseError::IneligibleReplica.code()
    );
    assert_eq!(cluster.partition("t", 0).isr, ids(&[1, 2]));

    // Caught up under its new epoch: it joins. A kept member's epoch is
    // not checked (fencing removes a member that went away).
    let mut caught_up_again = cluster.proposal("t", 0, &[1, 2, 3]);
    caught_up_again.broker_epochs =
        BTreeMap::from([(BrokerId(2), BrokerEpoch(0)), (BrokerId(3), new_epoch)]);
    let grown = cluster
        .controller
        .alter_partition(&caught_up_again, SOON)
        .unwrap();
    assert_eq!(grown.isr, ids(&[1, 2, 3]));
}

/// Guards against a broker that stops while it still leads partitions
/// another ISR member could lead (clients would wait out its session), and
/// against the controller electing it again while it goes.
#[test]
fn controlled_shutdown_moves_leaderships_and_the_broker_is_not_elected_again() {
    let cluster = Cluster::new(&[2, 3], &[]);
    let controller = &cluster.controller;
    cluster.create("a", &[&[1, 2, 3], &[1, 2], &[1], &[2, 1]], &[]);
    cluster.create(
        "b",
        &[&[2, 1]],
        &[("unclean.leader.election.enable", "true")],
    );
    controller.shut_down_controlled(SOON).unwrap();
    assert_eq!(
        leader_and_isr(&cluster, "a", 0),
        (BrokerId(2), ids(&[2, 3]))
    );
    assert_eq!(leader_and_isr(&cluster, "a", 1), (BrokerId(2), ids(&[2])));
    // Nothing to hand over: it keeps this one until it is fenced.
    assert_eq!(leader_and_isr(&cluster, "a", 2), (BrokerId(1), ids(&[1])));
    assert_eq!(leader_and_isr(&cluster, "a", 3), (BrokerId(2), ids(&[2])));
    assert_eq!(leader_and_isr(&cluster, "b", 0), (BrokerId(2), ids(&[2])));

    // Its partners fail: it is live, but neither in an ISR nor, for the
    // topic that allows unclean elections, elected from outside.
    cluster.heartbeat(2, true);
    assert_eq!(leader_and_isr(&cluster, "a", 0), (BrokerId(3), ids(&[3])));
    assert_eq!(
        leader_and_isr(&cluster, "a", 1),
        (BrokerId::NONE, ids(&[2]))
    );
    assert_eq!(
        leader_and_isr(&cluster, "b", 0),
        (BrokerId::NONE, ids(&[2]))
    );
    // A retry finds nothing left to move.
    controller.shut_down_controlled(SOON).unwrap();
}

fn leader_and_isr(cluster: &Cluster, name: &str, index: i32) -> (BrokerId, Vec<BrokerId>) {
    let partition = cluster.partition(name, index);
    (partition.leader, partition.isr)
}

/// Guards against `controlled.shutdown.enable=false` moving anything.
#[test]
fn a_disabled_controlled_shutdown_moves_nothing() {
    let cluster = Cluster::new(&[2], &[("controlled.shutdown.enable", "false")]);
    cluster.create("a", &[&[1, 2]], &[]);
    cluster.controller.shut_down_controlled(SOON).unwrap();
    assert_eq!(
        leader_and_isr(&cluster, "a", 0),
        (BrokerId(1), ids(&[1, 2]))
    );
}

/// Guards against an ISR that grows while its leader, elected uncleanly,
/// has not recovered (KIP-704: followers would be counted in sync with a
/// log whose history the election may have rewritten), and against a
/// partition that stays recovering once its leader says it recovered, or
/// goes back to it.
#[test]
fn a_recovering_partition_grows_its_isr_only_once_its_leader_recovered() {
    let cluster = Cluster::new(&[2], &[]);
    let controller = &cluster.controller;
    cluster.create(
        "t",
        &[&[2, 1]],
        &[("unclean.leader.election.enable", "true")],
    );
    cluster
        .alter_partition_as(2, &cluster.proposal("t", 0, &[2]))
        .unwrap();
    cluster.heartbeat(2, true);
    cluster.heartbeat(2, false);
    let elected = cluster.partition("t", 0);
    assert_eq!(
        (elected.leader, elected.isr.clone()),
        (BrokerId(1), ids(&[1]))
    );
    assert_eq!(
        elected.leader_recovery_state,
        LeaderRecoveryState::Recovering
    );
    // A snapshot's records keep it.
    let image = controller.image();
    let rebuilt = MetadataImage::default().apply(&image.records()).unwrap();
    assert_eq!(rebuilt.topics["t"].partitions, image.topics["t"].partitions);
    let code = |result: Result<PartitionImage, MetadataError>| result.unwrap_err().code;
    let recovering = |isr: &[i32]| IsrProposal {
        leader_recovery_state: LeaderRecoveryState::Recovering,
        ..cluster.proposal("t", 0, isr)
    };

    assert_eq!(
        code(controller.alter_partition(&recovering(&[1, 2]), SOON)),
        ResponseError::InvalidRequest.code()
    );
    // Still recovering, the same ISR: nothing to commit.
    assert_eq!(
        controller.alter_partition(&recovering(&[1]), SOON).unwrap(),
        elected
    );
    let recovered = controller
        .alter_partition(&cluster.proposal("t", 0, &[1]), SOON)
        .unwrap();
    assert_eq!(
        recovered.leader_recovery_state,
        LeaderRecoveryState::Recovered
    );
    assert_eq!(recovered.isr, ids(&[1]));
    assert_eq!(recovered.partition_epoch.0, elected.partition_epoch.0 + 1);
    assert_eq!(recovered.leader_epoch, elected.leader_epoch);
    assert_eq!(
        code(controller.alter_partition(&recovering(&[1]), SOON)),
        ResponseError::InvalidRequest.code(),
        "recovered cannot go back to recovering"
    );
    let grown = controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    assert_eq!(grown.isr, ids(&[1, 2]));
}

/// Guards against electing a replica outside the ISR (losing what only the
/// ISR had) where the topic does not allow it, and against leaving a
/// partition offline where it does: at fencing, at a replica's unfencing,
/// and when the config is switched on.
#[test]
fn unclean_elections_happen_only_where_the_topic_allows_them() {
    let cluster = Cluster::new(&[2, 3], &[]);
    let controller = &cluster.controller;
    cluster.create("clean", &[&[2, 1]], &[]);
    cluster.create(
        "unclean",
        &[&[2, 1], &[2, 3]],
        &[("unclean.leader.election.enable", "true")],
    );
    // Broker 2, the leader, leaves only itself in each ISR.
    for (name, index) in [("clean", 0), ("unclean", 0), ("unclean", 1)] {
        cluster
            .alter_partition_as(2, &cluster.proposal(name, index, &[2]))
            .unwrap();
    }
    cluster.heartbeat(3, true);
    cluster.heartbeat(2, true);
    assert_eq!(
        leader_and_isr(&cluster, "clean", 0),
        (BrokerId::NONE, ids(&[2]))
    );
    assert_eq!(
        leader_and_isr(&cluster, "unclean", 0),
        (BrokerId(1), ids(&[1]))
    );
    // No live replica at the fencing; one when broker 3 comes back.
    assert_eq!(
        leader_and_isr(&cluster, "unclean", 1),
        (BrokerId::NONE, ids(&[2]))
    );
    cluster.heartbeat(3, false);
    assert_eq!(
        leader_and_isr(&cluster, "unclean", 1),
        (BrokerId(3), ids(&[3]))
    );

    let offline_epoch = cluster.partition("clean", 0).leader_epoch;
    controller
        .alter_topic_configs("clean", false, |_| {
            Ok(pairs(&[("unclean.leader.election.enable", "true")]))
        })
        .unwrap();
    let elected = cluster.partition("clean", 0);
    assert_eq!((elected.leader, elected.isr), (BrokerId(1), ids(&[1])));
    assert_eq!(elected.leader_epoch.0, offline_epoch.0 + 1);
    // Every unclean election marked its partition recovering (KIP-704).
    for (name, index) in [("clean", 0), ("unclean", 0), ("unclean", 1)] {
        assert_eq!(
            cluster.partition(name, index).leader_recovery_state,
            LeaderRecoveryState::Recovering,
            "{name}-{index}"
        );
    }
    let bad = controller
        .alter_topic_configs("clean", false, |_| {
            Ok(pairs(&[("unclean.leader.election.enable", "maybe")]))
        })
        .unwrap_err();
    assert_eq!(bad.code, ResponseError::InvalidConfig.code());
}

/// The outcome codes of `elect_leaders`, by (topic, partition).
fn election_codes(outcomes: &[ElectionOutcome]) -> Vec<(&str, i32, i16)> {
    outcomes
        .iter()
        .map(|outcome| (outcome.topic.as_str(), outcome.partition, outcome.code))
        .collect()
}

/// Guards against leaderships that failover moved staying away for good
/// (clients then all go to the broker that came back first), against
/// electing a preferred replica outside the ISR, and against an unclean
/// election where a leader exists: Kafka's ElectLeaders answers.
#[test]
fn elect_leaders_gives_leaderships_back_to_in_sync_preferred_replicas() {
    let cluster = Cluster::new(&[2, 3], &[]);
    let controller = &cluster.controller;
    cluster.create("t", &[&[2, 1], &[3, 1], &[1, 2]], &[]);
    // Broker 2 fails: partition 0 moves to 1. Broker 3 leaves partition
    // 1's ISR first, so its failover leaves it out.
    cluster
        .alter_partition_as(3, &cluster.proposal("t", 1, &[3, 1]))
        .unwrap();
    cluster.heartbeat(2, true);
    cluster.heartbeat(3, true);
    assert_eq!(leader_and_isr(&cluster, "t", 0), (BrokerId(1), ids(&[1])));
    assert_eq!(leader_and_isr(&cluster, "t", 1), (BrokerId(1), ids(&[1])));
    cluster.heartbeat(2, false);
    cluster.heartbeat(3, false);
    // Live again, but not in sync: nothing to elect.
    let asked = || {
        Some(vec![
            ("t".to_owned(), 0),
            ("t".to_owned(), 2),
            ("gone".to_owned(), 0),
        ])
    };
    let outcomes = controller
        .elect_leaders(ElectionType::Preferred, asked(), SOON)
        .unwrap();
    assert_eq!(
        election_codes(&outcomes),
        [
            ("t", 0, ResponseError::PreferredLeaderNotAvailable.code()),
            ("t", 2, ResponseError::ElectionNotNeeded.code()),
            ("gone", 0, ResponseError::UnknownTopicOrPartition.code()),
        ]
    );
    // Broker 2 catches up and rejoins: its preferred leadership comes
    // back in a new leader epoch, the ISR unchanged.
    cluster
        .controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    let before = cluster.partition("t", 0);
    let outcomes = controller
        .elect_leaders(ElectionType::Preferred, asked(), SOON)
        .unwrap();
    assert_eq!(election_codes(&outcomes)[0], ("t", 0, 0));
    let after = cluster.partition("t", 0);
    assert_eq!((after.leader, after.isr), (BrokerId(2), ids(&[1, 2])));
    assert!(after.leader_epoch > before.leader_epoch);
    // Asked for every partition, only what happened is listed: partition
    // 1's preferred replica is still out of sync.
    let outcomes = controller
        .elect_leaders(ElectionType::Preferred, None, SOON)
        .unwrap();
    assert_eq!(
        election_codes(&outcomes),
        [("t", 1, ResponseError::PreferredLeaderNotAvailable.code())]
    );
    // An unclean election is not needed where there is a leader.
    let outcomes = controller
        .elect_leaders(ElectionType::Unclean, Some(vec![("t".to_owned(), 1)]), SOON)
        .unwrap();
    assert_eq!(
        election_codes(&outcomes),
        [("t", 1, ResponseError::ElectionNotNeeded.code())]
    );
}

/// Guards against an offline partition staying offline when an
/// administrator asks for an unclean election, whatever the topic's
/// config, and against one electing nobody when no replica is live.
#[test]
fn an_unclean_election_asked_for_elects_any_live_replica() {
    let cluster = Cluster::new(&[2, 3], &[]);
    let controller = &cluster.controller;
    cluster.create("t", &[&[2, 1], &[2, 3]], &[]);
    for index in [0, 1] {
        cluster
            .alter_partition_as(2, &cluster.proposal("t", index, &[2]))
            .unwrap();
    }
    cluster.heartbeat(3, true);
    cluster.heartbeat(2, true);
    assert_eq!(
        leader_and_isr(&cluster, "t", 0),
        (BrokerId::NONE, ids(&[2]))
    );
    let asked = Some(vec![("t".to_owned(), 0), ("t".to_owned(), 1)]);
    let outcomes = controller
        .elect_leaders(ElectionType::Unclean, asked, SOON)
        .unwrap();
    assert_eq!(
        election_codes(&outcomes),
        [
            ("t", 0, 0),
            ("t", 1, ResponseError::EligibleLeadersNotAvailable.code()),
        ]
    );
    assert_eq!(leader_and_isr(&cluster, "t", 0), (BrokerId(1), ids(&[1])));
    assert_eq!(
        cluster.partition("t", 0).leader_recovery_state,
        LeaderRecoveryState::Recovering,
        "elected from outside the ISR (KIP-704)"
    );
    assert_eq!(
        leader_and_isr(&cluster, "t", 1),
        (BrokerId::NONE, ids(&[2]))
    );
}

/// Guards against `auto.leader.rebalance.enable` moving leaderships of a
/// broker within `leader.imbalance.per.broker.percentage`, or not moving
/// them beyond it, or moving them to a replica out of sync.
#[test]
fn leaderships_are_rebalanced_past_the_imbalance_percentage() {
    let cluster = Cluster::new(&[2, 3], &[("leader.imbalance.per.broker.percentage", "40")]);
    cluster.create("t", &[&[2, 1], &[2, 1], &[2, 3], &[3, 1], &[3, 1]], &[]);
    // Brokers 2 and 3 fail and come back: 1 leads every partition but
    // partition 2, which waited for 3 (its last ISR member).
    cluster.heartbeat(2, true);
    cluster.heartbeat(3, true);
    cluster.heartbeat(2, false);
    cluster.heartbeat(3, false);
    let leaders = |cluster: &Cluster| -> Vec<i32> {
        (0..5)
            .map(|index| cluster.partition("t", index).leader.0)
            .collect()
    };
    assert_eq!(leaders(&cluster), [1, 1, 3, 1, 1]);
    // Only partitions 0 and 3 have their preferred replica back in sync.
    cluster
        .controller
        .alter_partition(&cluster.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    cluster
        .controller
        .alter_partition(&cluster.proposal("t", 3, &[1, 3]), SOON)
        .unwrap();
    cluster.controller.rebalance_leaders().unwrap();
    assert_eq!(leaders(&cluster), [2, 1, 3, 3, 1]);
    assert_eq!(cluster.partition("t", 0).isr, ids(&[1, 2]));

    // Broker 2 leads one of its two preferred partitions: 50% led
    // elsewhere is within 50%, so nothing moves.
    let lenient = Cluster::new(&[2], &[("leader.imbalance.per.broker.percentage", "50")]);
    lenient.create("t", &[&[2, 1], &[2, 1]], &[]);
    lenient.heartbeat(2, true);
    lenient.heartbeat(2, false);
    for index in [0, 1] {
        lenient
            .controller
            .alter_partition(&lenient.proposal("t", index, &[1, 2]), SOON)
            .unwrap();
    }
    lenient
        .controller
        .elect_leaders(
            ElectionType::Preferred,
            Some(vec![("t".to_owned(), 1)]),
            SOON,
        )
        .unwrap();
    let epoch = lenient.partition("t", 0).leader_epoch;
    lenient.controller.rebalance_leaders().unwrap();
    assert_eq!(lenient.partition("t", 0).leader, BrokerId(1));
    assert_eq!(lenient.partition("t", 0).leader_epoch, epoch);
    // Switched off, nothing moves either.
    let off = Cluster::new(&[2], &[("auto.leader.rebalance.enable", "false")]);
    off.create("t", &[&[2, 1]], &[]);
    off.heartbeat(2, true);
    off.heartbeat(2, false);
    off.controller
        .alter_partition(&off.proposal("t", 0, &[1, 2]), SOON)
        .unwrap();
    off.controller.rebalance_leaders().unwrap();
    assert_eq!(off.partition("t", 0).leader, BrokerId(1));
}
