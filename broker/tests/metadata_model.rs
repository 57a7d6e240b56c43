//! Model test of the metadata state machine: a seeded workload of valid
//! metadata changes (topics created with their partitions and configs,
//! partitions added, replaced and changed (leader recovery states among
//! the changes), configs set and removed, topics
//! removed, producer id blocks taken, brokers registered), each change one
//! batch of records, applied record by record to the model image and, as
//! whole batches, appended to a real metadata log, with snapshots taken at
//! random points, restarts that rebuild the image from the newest snapshot
//! and the records after it, and crashes that tear the last batch. After
//! every restart the rebuilt image must equal the model's.
//!
//! Guards against: a record or batch that applies differently in a batch
//! than alone, a snapshot that does not rebuild its image, a restart that
//! replays a record twice, skips one or replays records a snapshot already
//! holds, and a torn tail that is not cut (or cuts acknowledged records).
//!
//! `FJORD_MODEL_SEED=<n>` replays one seed; `FJORD_MODEL_CASES=<n>` sets how
//! many seeds run (default 40); `FJORD_MODEL_STEPS=<n>` the steps per seed.

use std::path::{Path, PathBuf};

use fjord_broker::controller::log::{MetadataLog, Recovered, METADATA_LOG_DIR_NAME};
use fjord_broker::metadata::image::{MetadataImage, PartitionImage};
use fjord_broker::metadata::records::{
    BrokerCoresRecord, BrokerEndpoint, BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType,
    LeaderRecoveryRecord, LeaderRecoveryState, MetadataRecord, PartitionChangeRecord,
    PartitionEpoch, PartitionRecord, ProducerIdsRecord, RegisterBrokerRecord, RemoveTopicRecord,
    TopicId, TopicRecord,
};
use fjord_engine::testkit::{run_model_seeds, Rng, SeedRuns};
use fjord_engine::{LeaderEpoch, ProducerId};

const DEFAULTS: SeedRuns = SeedRuns {
    cases: 40,
    steps: 150,
};
/// Brokers replicas are placed on.
const BROKERS: i32 = 5;
const TOPIC_NAMES: [&str; 6] = ["a", "b", "c", "orders", "events", "__consumer_offsets"];
const CONFIG_KEYS: [&str; 4] = ["retention.ms", "cleanup.policy", "segment.bytes", "x"];

#[test]
fn replayed_snapshots_and_logs_give_the_image_of_every_record_applied_in_turn() {
    run_model_seeds(DEFAULTS, run_seed);
}

fn run_seed(seed: u64, steps: u64) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join(METADATA_LOG_DIR_NAME);
    let mut rng = Rng::new(seed);
    let (mut log, recovered) = MetadataLog::open(&dir).unwrap();
    assert!(recovered.snapshot.is_empty() && recovered.batches.is_empty());
    // Every record applied on its own, in order.
    let mut model = MetadataImage::default();
    // What a controller holds: whole batches applied, or a replay.
    let mut live = MetadataImage::default();
    for step in 0..steps {
        match rng.below(100) {
            0..=64 => {
                let batch = random_change(&mut rng, &model);
                for record in &batch {
                    model = model
                        .apply(std::slice::from_ref(record))
                        .unwrap_or_else(|error| panic!("step {step}: {record:?}: {error}"));
                }
                live = live.apply(&batch).unwrap();
                log.append(&batch).unwrap();
                assert_eq!(live, model, "step {step}: a batch applied differently");
            }
            65..=76 => {
                let records = live.records();
                let rebuilt = MetadataImage::default().apply(&records).unwrap();
                assert_eq!(rebuilt, live, "step {step}: the image's records differ");
                log.snapshot(&records).unwrap();
            }
            77..=88 => {
                drop(log);
                let recovered;
                (log, recovered) = MetadataLog::open(&dir).unwrap();
                assert_eq!(recovered.cut_bytes, 0, "step {step}: a clean log was cut");
                live = replay(&recovered);
                assert_eq!(live, model, "step {step}: restart");
            }
            _ => {
                let torn = tear_an_append(&mut rng, &mut log, &dir, &model);
                drop(log);
                let recovered;
                (log, recovered) = MetadataLog::open(&dir).unwrap();
                assert_eq!(recovered.cut_bytes, torn, "step {step}: torn tail");
                live = replay(&recovered);
                assert_eq!(live, model, "step {step}: restart after a torn append");
            }
        }
    }
}

/// The image a start rebuilds: the snapshot, then each batch after it.
fn replay(recovered: &Recovered) -> MetadataImage {
    let mut image = MetadataImage::default()
        .apply(&recovered.snapshot)
        .expect("a snapshot applies to the empty image");
    for batch in &recovered.batches {
        image = image.apply(batch).expect("a logged batch applies");
    }
    image
}

/// Appends a change the model never sees, then leaves only part of it on
/// disk (a crash before its sync completed): a prefix of its frame, or
/// garbage after the last whole batch. Returns the bytes left to cut.
fn tear_an_append(rng: &mut Rng, log: &mut MetadataLog, dir: &Path, model: &MetadataImage) -> u64 {
    let segment = active_segment(dir);
    let before = std::fs::metadata(&segment).unwrap().len();
    if rng.chance(1, 3) {
        let length = rng.between(1, 64) as usize;
        let garbage = rng.bytes(length);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&garbage);
        std::fs::write(&segment, bytes).unwrap();
        return garbage.len() as u64;
    }
    log.append(&random_change(rng, model)).unwrap();
    let after = std::fs::metadata(&segment).unwrap().len();
    let kept = rng.between(1, after - before - 1);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(before + kept).unwrap();
    kept
}

/// The segment appends go to: the one with the highest base offset.
fn active_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .max()
        .expect("a metadata log has a segment")
}

/// One change: 1 to 3 operations against `image`, each valid after the
/// ones before it.
fn random_change(rng: &mut Rng, image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut scratch = image.clone();
    let mut batch = Vec::new();
    for _ in 0..rng.between(1, 3) {
        let records = random_operation(rng, &scratch);
        scratch = scratch.apply(&records).unwrap_or_else(|error| {
            panic!("the generator made records that do not apply: {records:?}: {error}")
        });
        batch.extend(records);
    }
    batch
}

fn random_operation(rng: &mut Rng, image: &MetadataImage) -> Vec<MetadataRecord> {
    let topics: Vec<_> = image.topics.values().cloned().collect();
    let with_partitions: Vec<_> = topics
        .iter()
        .filter(|topic| !topic.partitions.is_empty())
        .cloned()
        .collect();
    loop {
        match rng.below(9) {
            0 | 1 => {
                let free: Vec<_> = TOPIC_NAMES
                    .iter()
                    .filter(|name| !image.topics.contains_key(**name))
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let name = *free[rng.below(free.len() as u64) as usize];
                return create_topic(rng, name);
            }
            2 if !topics.is_empty() => {
                let topic = &topics[rng.below(topics.len() as u64) as usize];
                let first = topic.partition_count();
                return (first..first + rng.between(1, 3) as i32)
                    .map(|index| MetadataRecord::Partition(new_partition(rng, topic.id, index)))
                    .collect();
            }
            3 if !with_partitions.is_empty() => {
                let topic = &with_partitions[rng.below(with_partitions.len() as u64) as usize];
                let index = rng.below(topic.partitions.len() as u64) as usize;
                return change_partition(rng, topic.id, index as i32, &topic.partitions[index]);
            }
            4 if !with_partitions.is_empty() => {
                let topic = &with_partitions[rng.below(with_partitions.len() as u64) as usize];
                let index = rng.below(topic.partitions.len() as u64) as usize;
                let current = &topic.partitions[index];
                let mut record = new_partition(rng, topic.id, index as i32);
                record.leader_epoch =
                    LeaderEpoch(current.leader_epoch.0 + rng.between(0, 2) as i32);
                record.partition_epoch =
                    PartitionEpoch(current.partition_epoch.0 + rng.between(1, 3) as i32);
                return vec![MetadataRecord::Partition(record)];
            }
            5 if !topics.is_empty() => {
                let topic = &topics[rng.below(topics.len() as u64) as usize];
                let key = CONFIG_KEYS[rng.below(CONFIG_KEYS.len() as u64) as usize];
                let value = (!rng.chance(1, 3)).then(|| rng.below(1000).to_string());
                return vec![config(&topic.name, key, value)];
            }
            6 if !topics.is_empty() => {
                let topic = &topics[rng.below(topics.len() as u64) as usize];
                return vec![MetadataRecord::RemoveTopic(RemoveTopicRecord {
                    topic_id: topic.id,
                })];
            }
            7 => {
                let next = image.next_producer_id.0 + rng.between(1, 2000) as i64;
                return vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
                    broker_id: BrokerId(rng.between(1, BROKERS as u64) as i32),
                    broker_epoch: BrokerEpoch(rng.below(100) as i64),
                    next_producer_id: ProducerId(next),
                })];
            }
            8 => {
                let broker = BrokerId(rng.between(1, BROKERS as u64) as i32);
                let epoch = image
                    .brokers
                    .get(&broker)
                    .map_or(0, |registration| registration.epoch.0 + 1)
                    + rng.below(5) as i64;
                let mut records = vec![MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                    broker_id: broker,
                    incarnation_id: rng.bytes(16).try_into().unwrap(),
                    broker_epoch: BrokerEpoch(epoch),
                    endpoints: vec![BrokerEndpoint {
                        name: "PLAINTEXT".to_owned(),
                        host: format!("broker{}", broker.0),
                        port: 9092,
                        security_protocol: 0,
                    }],
                    rack: rng.chance(1, 2).then(|| format!("rack{}", rng.below(3))),
                    fenced: rng.chance(1, 4),
                })];
                if rng.chance(3, 4) {
                    records.push(MetadataRecord::BrokerCores(BrokerCoresRecord {
                        id: broker,
                        epoch: BrokerEpoch(epoch),
                        cores: rng.between(1, 64) as u32,
                    }));
                }
                return records;
            }
            _ => {}
        }
    }
}

fn create_topic(rng: &mut Rng, name: &str) -> Vec<MetadataRecord> {
    let mut id = [0; 16];
    id.copy_from_slice(&rng.bytes(16));
    id[0] |= 1;
    let topic_id = TopicId(id);
    let mut records = vec![MetadataRecord::Topic(TopicRecord {
        name: name.to_owned(),
        topic_id,
    })];
    for index in 0..rng.between(0, 4) as i32 {
        records.push(MetadataRecord::Partition(new_partition(
            rng, topic_id, index,
        )));
    }
    for _ in 0..rng.below(3) {
        let key = CONFIG_KEYS[rng.below(CONFIG_KEYS.len() as u64) as usize];
        records.push(config(name, key, Some(rng.below(1000).to_string())));
    }
    records
}

fn config(topic: &str, key: &str, value: Option<String>) -> MetadataRecord {
    MetadataRecord::Config(ConfigRecord {
        resource_type: ConfigResourceType::Topic,
        resource_name: topic.to_owned(),
        name: key.to_owned(),
        value,
    })
}

/// A valid replica state: 1 to 3 distinct brokers, an ISR of some of them,
/// a leader from the ISR (or none), reassignment lists from the replicas.
fn random_state(rng: &mut Rng) -> PartitionImage {
    let mut replicas: Vec<BrokerId> = Vec::new();
    let count = rng.between(1, 3) as usize;
    while replicas.len() < count {
        let broker = BrokerId(rng.between(1, BROKERS as u64) as i32);
        if !replicas.contains(&broker) {
            replicas.push(broker);
        }
    }
    let subset = |rng: &mut Rng| -> Vec<BrokerId> {
        replicas
            .iter()
            .copied()
            .filter(|_| rng.chance(1, 2))
            .collect()
    };
    let isr = if rng.chance(1, 8) {
        Vec::new()
    } else {
        let mut isr = subset(rng);
        if isr.is_empty() {
            isr.push(replicas[0]);
        }
        isr
    };
    let leader = if isr.is_empty() || rng.chance(1, 10) {
        BrokerId::NONE
    } else {
        isr[rng.below(isr.len() as u64) as usize]
    };
    PartitionImage {
        removing_replicas: if rng.chance(1, 5) {
            subset(rng)
        } else {
            Vec::new()
        },
        adding_replicas: if rng.chance(1, 5) {
            subset(rng)
        } else {
            Vec::new()
        },
        replicas,
        isr,
        leader,
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
        leader_recovery_state: LeaderRecoveryState::Recovered,
    }
}

fn new_partition(rng: &mut Rng, topic_id: TopicId, partition_id: i32) -> PartitionRecord {
    let state = random_state(rng);
    PartitionRecord {
        partition_id,
        topic_id,
        replicas: state.replicas,
        isr: state.isr,
        removing_replicas: state.removing_replicas,
        adding_replicas: state.adding_replicas,
        leader: state.leader,
        leader_epoch: LeaderEpoch(rng.below(3) as i32),
        partition_epoch: PartitionEpoch(rng.below(3) as i32),
    }
}

/// A `PartitionChangeRecord` to a random valid state: every field that
/// changes is set, and an unchanged one sometimes too; sometimes followed
/// by a `LeaderRecoveryRecord`, as an election's or a leader's change of
/// the recovery state goes with its `PartitionChangeRecord`.
fn change_partition(
    rng: &mut Rng,
    topic_id: TopicId,
    partition_id: i32,
    current: &PartitionImage,
) -> Vec<MetadataRecord> {
    let target = random_state(rng);
    let mut field = |new: &Vec<BrokerId>, old: &Vec<BrokerId>| {
        (new != old || rng.chance(1, 4)).then(|| new.clone())
    };
    let isr = field(&target.isr, &current.isr);
    let replicas = field(&target.replicas, &current.replicas);
    let removing_replicas = field(&target.removing_replicas, &current.removing_replicas);
    let adding_replicas = field(&target.adding_replicas, &current.adding_replicas);
    let leader = (target.leader != current.leader || rng.chance(1, 4)).then_some(target.leader);
    let mut records = vec![MetadataRecord::PartitionChange(PartitionChangeRecord {
        partition_id,
        topic_id,
        isr,
        leader,
        replicas,
        removing_replicas,
        adding_replicas,
    })];
    if rng.chance(1, 3) {
        let state = if rng.chance(1, 2) {
            LeaderRecoveryState::Recovering
        } else {
            LeaderRecoveryState::Recovered
        };
        records.push(MetadataRecord::LeaderRecovery(LeaderRecoveryRecord {
            partition_id,
            topic_id,
            state,
        }));
    }
    records
}
