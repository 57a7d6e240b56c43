//! The rules `apply` enforces, one record kind at a time.

use super::*;

const A: BrokerId = BrokerId(1);
const B: BrokerId = BrokerId(2);
const C: BrokerId = BrokerId(3);

fn topic_id(byte: u8) -> TopicId {
    TopicId([byte; 16])
}

fn topic(name: &str, id: TopicId) -> MetadataRecord {
    MetadataRecord::Topic(TopicRecord {
        name: name.to_owned(),
        topic_id: id,
    })
}

fn partition(id: TopicId, partition_id: i32, replicas: &[BrokerId]) -> PartitionRecord {
    PartitionRecord {
        partition_id,
        topic_id: id,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        removing_replicas: Vec::new(),
        adding_replicas: Vec::new(),
        leader: replicas[0],
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
    }
}

fn change(id: TopicId, partition_id: i32) -> PartitionChangeRecord {
    PartitionChangeRecord {
        partition_id,
        topic_id: id,
        isr: None,
        leader: None,
        replicas: None,
        removing_replicas: None,
        adding_replicas: None,
    }
}

fn config(topic: &str, name: &str, value: Option<&str>) -> MetadataRecord {
    MetadataRecord::Config(ConfigRecord {
        resource_type: ConfigResourceType::Topic,
        resource_name: topic.to_owned(),
        name: name.to_owned(),
        value: value.map(str::to_owned),
    })
}

/// A registration of `broker` in epoch `epoch` with one PLAINTEXT endpoint.
pub(crate) fn register(broker: BrokerId, epoch: i64) -> MetadataRecord {
    MetadataRecord::RegisterBroker(RegisterBrokerRecord {
        broker_id: broker,
        incarnation_id: [7; 16],
        broker_epoch: BrokerEpoch(epoch),
        endpoints: vec![BrokerEndpoint {
            name: "PLAINTEXT".to_owned(),
            host: "localhost".to_owned(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: None,
        fenced: false,
    })
}

fn cores(broker: BrokerId, epoch: i64, cores: u32) -> MetadataRecord {
    MetadataRecord::BrokerCores(BrokerCoresRecord {
        id: broker,
        epoch: BrokerEpoch(epoch),
        cores,
    })
}

fn producer_ids(next: i64) -> MetadataRecord {
    MetadataRecord::ProducerIds(ProducerIdsRecord {
        broker_id: A,
        broker_epoch: BrokerEpoch(0),
        next_producer_id: ProducerId(next),
    })
}

/// Topic "t" (id 1) with partition 0 on A, B, C, led by A.
fn one_topic() -> MetadataImage {
    MetadataImage::default()
        .apply(&[
            topic("t", topic_id(1)),
            MetadataRecord::Partition(partition(topic_id(1), 0, &[A, B, C])),
        ])
        .unwrap()
}

fn apply_one(image: &MetadataImage, record: MetadataRecord) -> Result<MetadataImage, ApplyError> {
    image.apply(&[record])
}

#[test]
fn a_partition_of_an_unknown_topic_is_refused() {
    let error = apply_one(
        &MetadataImage::default(),
        MetadataRecord::Partition(partition(topic_id(9), 0, &[A])),
    )
    .unwrap_err();
    assert_eq!(error, ApplyError::UnknownTopicId { id: topic_id(9) });
    let error = apply_one(
        &one_topic(),
        MetadataRecord::PartitionChange(change(topic_id(9), 0)),
    )
    .unwrap_err();
    assert_eq!(error, ApplyError::UnknownTopicId { id: topic_id(9) });
}

#[test]
fn topic_names_and_ids_are_unique_and_ids_not_zero() {
    let image = one_topic();
    assert!(matches!(
        apply_one(&image, topic("t", topic_id(2))),
        Err(ApplyError::TopicNameExists { .. })
    ));
    assert!(matches!(
        apply_one(&image, topic("u", topic_id(1))),
        Err(ApplyError::TopicIdExists { .. })
    ));
    assert!(matches!(
        apply_one(&image, topic("u", TopicId([0; 16]))),
        Err(ApplyError::ZeroTopicId { .. })
    ));
}

#[test]
fn partitions_are_added_densely_from_zero() {
    let image = one_topic();
    for gap in [2, -1] {
        let error = apply_one(
            &image,
            MetadataRecord::Partition(partition(topic_id(1), gap, &[A])),
        )
        .unwrap_err();
        assert_eq!(
            error,
            ApplyError::PartitionGap {
                topic: topic_id(1),
                partition: gap,
                count: 1
            }
        );
    }
    let grown = apply_one(
        &image,
        MetadataRecord::Partition(partition(topic_id(1), 1, &[B])),
    )
    .unwrap();
    assert_eq!(grown.topics["t"].partition_count(), 2);
    assert!(grown.contains(&TopicPartition::new("t", 1)));
    assert!(!grown.contains(&TopicPartition::new("t", 2)));
    assert!(!image.contains(&TopicPartition::new("t", 1)));
}

#[test]
fn replica_lists_and_the_leader_are_checked() {
    let image = one_topic();
    let invalid = |record: PartitionRecord| {
        let error = apply_one(&image, MetadataRecord::Partition(record)).unwrap_err();
        assert!(
            matches!(error, ApplyError::InvalidReplicas { .. }),
            "{error:?}"
        );
    };
    invalid(PartitionRecord {
        leader: C,
        isr: vec![A, B],
        ..partition(topic_id(1), 1, &[A, B, C])
    });
    invalid(PartitionRecord {
        isr: vec![A, C],
        ..partition(topic_id(1), 1, &[A, B])
    });
    invalid(partition(topic_id(1), 1, &[A, B, A]));
    invalid(PartitionRecord {
        replicas: Vec::new(),
        isr: Vec::new(),
        leader: BrokerId::NONE,
        ..partition(topic_id(1), 1, &[A])
    });
    invalid(PartitionRecord {
        adding_replicas: vec![C],
        ..partition(topic_id(1), 1, &[A, B])
    });
    let leaderless = PartitionRecord {
        isr: Vec::new(),
        leader: BrokerId::NONE,
        ..partition(topic_id(1), 1, &[A, B])
    };
    assert!(apply_one(&image, MetadataRecord::Partition(leaderless)).is_ok());
}

#[test]
fn a_replaced_partition_never_goes_back_in_epochs() {
    let image = one_topic();
    let same = partition(topic_id(1), 0, &[A, B, C]);
    assert!(matches!(
        apply_one(&image, MetadataRecord::Partition(same.clone())),
        Err(ApplyError::EpochWentBack { .. })
    ));
    let newer = PartitionRecord {
        leader: B,
        leader_epoch: LeaderEpoch(3),
        partition_epoch: PartitionEpoch(5),
        ..same.clone()
    };
    let replaced = apply_one(&image, MetadataRecord::Partition(newer.clone())).unwrap();
    assert_eq!(replaced.topics["t"].partitions[0].leader, B);
    let older_leader_epoch = PartitionRecord {
        leader_epoch: LeaderEpoch(2),
        partition_epoch: PartitionEpoch(6),
        ..newer
    };
    assert!(matches!(
        apply_one(&replaced, MetadataRecord::Partition(older_leader_epoch)),
        Err(ApplyError::EpochWentBack { .. })
    ));
}

#[test]
fn partition_changes_bump_the_epochs_and_keep_what_they_leave_out() {
    let image = one_topic();
    let shrunk = apply_one(
        &image,
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            isr: Some(vec![A, B]),
            ..change(topic_id(1), 0)
        }),
    )
    .unwrap();
    let partition = &shrunk.topics["t"].partitions[0];
    assert_eq!(partition.isr, [A, B]);
    assert_eq!(partition.replicas, [A, B, C]);
    assert_eq!(partition.leader, A);
    assert_eq!(partition.leader_epoch, LeaderEpoch(0));
    assert_eq!(partition.partition_epoch, PartitionEpoch(1));
    let moved = apply_one(
        &shrunk,
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            leader: Some(B),
            ..change(topic_id(1), 0)
        }),
    )
    .unwrap();
    let partition = &moved.topics["t"].partitions[0];
    assert_eq!(partition.leader, B);
    assert_eq!(partition.leader_epoch, LeaderEpoch(1));
    assert_eq!(partition.partition_epoch, PartitionEpoch(2));
    let to_outside_isr = apply_one(
        &shrunk,
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            leader: Some(C),
            ..change(topic_id(1), 0)
        }),
    );
    assert!(matches!(
        to_outside_isr,
        Err(ApplyError::InvalidReplicas { .. })
    ));
    let shrunk_past_leader = apply_one(
        &image,
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            isr: Some(vec![B]),
            ..change(topic_id(1), 0)
        }),
    );
    assert!(matches!(
        shrunk_past_leader,
        Err(ApplyError::InvalidReplicas { .. })
    ));
    let leaderless = apply_one(
        &image,
        MetadataRecord::PartitionChange(PartitionChangeRecord {
            isr: Some(Vec::new()),
            leader: Some(BrokerId::NONE),
            ..change(topic_id(1), 0)
        }),
    )
    .unwrap();
    assert_eq!(
        leaderless.topics["t"].partitions[0].leader_epoch,
        LeaderEpoch(1)
    );
    let missing = apply_one(
        &image,
        MetadataRecord::PartitionChange(change(topic_id(1), 1)),
    );
    assert_eq!(
        missing.unwrap_err(),
        ApplyError::UnknownPartition {
            topic: topic_id(1),
            partition: 1
        }
    );
}

#[test]
fn configs_are_set_replaced_and_removed_in_name_order() {
    let image = one_topic()
        .apply(&[
            config("t", "retention.ms", Some("5")),
            config("t", "cleanup.policy", Some("compact")),
            config("t", "retention.ms", Some("6")),
            config("t", "segment.ms", Some("7")),
            config("t", "segment.ms", None),
            config("t", "never.set", None),
        ])
        .unwrap();
    let topic = &image.topics["t"];
    assert_eq!(
        topic.configs,
        [
            ("cleanup.policy".to_owned(), "compact".to_owned()),
            ("retention.ms".to_owned(), "6".to_owned())
        ]
    );
    assert_eq!(topic.config("retention.ms"), Some("6"));
    assert_eq!(topic.config("segment.ms"), None);
    assert_eq!(
        apply_one(&image, config("u", "retention.ms", Some("1"))).unwrap_err(),
        ApplyError::UnknownTopicName {
            name: "u".to_owned()
        }
    );
}

#[test]
fn removing_a_topic_takes_its_partitions_and_configs() {
    let image = one_topic()
        .apply(&[config("t", "retention.ms", Some("5"))])
        .unwrap();
    let removed = apply_one(
        &image,
        MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: topic_id(1),
        }),
    )
    .unwrap();
    assert!(removed.topics.is_empty());
    assert!(removed.topic_by_id(topic_id(1).uuid()).is_none());
    assert!(!removed.contains(&TopicPartition::new("t", 0)));
    let recreated = removed
        .apply(&[
            topic("t", topic_id(2)),
            MetadataRecord::Partition(partition(topic_id(2), 0, &[A])),
        ])
        .unwrap();
    assert!(recreated.topics["t"].configs.is_empty());
    assert_eq!(
        apply_one(
            &removed,
            MetadataRecord::RemoveTopic(RemoveTopicRecord {
                topic_id: topic_id(1)
            })
        )
        .unwrap_err(),
        ApplyError::UnknownTopicId { id: topic_id(1) }
    );
}

#[test]
fn producer_id_blocks_and_broker_epochs_only_move_forward() {
    let image = apply_one(&MetadataImage::default(), producer_ids(1000)).unwrap();
    assert_eq!(image.next_producer_id, ProducerId(1000));
    for next in [1000, 999] {
        assert!(matches!(
            apply_one(&image, producer_ids(next)),
            Err(ApplyError::ProducerIdsWentBack { .. })
        ));
    }
    let registered = apply_one(&image, register(A, 5)).unwrap();
    assert_eq!(registered.brokers[&A].epoch, BrokerEpoch(5));
    assert!(matches!(
        apply_one(&registered, register(A, 5)),
        Err(ApplyError::BrokerEpochWentBack { .. })
    ));
    let again = apply_one(&registered, register(A, 6)).unwrap();
    assert_eq!(again.brokers[&A].epoch, BrokerEpoch(6));
    assert!(apply_one(&registered, register(B, 1)).is_ok());
}

#[test]
fn a_batch_applies_whole_or_not_at_all() {
    let image = one_topic();
    let error = image
        .apply(&[
            config("t", "retention.ms", Some("5")),
            producer_ids(10),
            MetadataRecord::Partition(partition(topic_id(1), 5, &[A])),
        ])
        .unwrap_err();
    assert!(matches!(error, ApplyError::PartitionGap { .. }));
    assert_eq!(image, one_topic());
}

#[test]
fn a_registrations_cores_need_that_registration_and_at_least_one() {
    let registered = MetadataImage::default().apply(&[register(A, 3)]).unwrap();
    assert_eq!(registered.brokers[&A].cores, None);
    let image = apply_one(&registered, cores(A, 3, 4)).unwrap();
    assert_eq!(image.brokers[&A].cores, Some(4));
    assert_eq!(
        apply_one(&registered, cores(A, 2, 4)),
        Err(ApplyError::UnknownBrokerRegistration {
            broker: A.0,
            epoch: 2
        })
    );
    assert_eq!(
        apply_one(&registered, cores(B, 3, 4)),
        Err(ApplyError::UnknownBrokerRegistration {
            broker: B.0,
            epoch: 3
        })
    );
    assert_eq!(
        apply_one(&registered, cores(A, 3, 0)),
        Err(ApplyError::NoCores { broker: A.0 })
    );
    // A new registration starts without the cores of the one it replaces.
    let again = apply_one(&image, register(A, 5)).unwrap();
    assert_eq!(again.brokers[&A].cores, None);
}

#[test]
fn an_images_records_rebuild_it() {
    let image = one_topic()
        .apply(&[
            register(A, 0),
            register(B, 4),
            cores(B, 4, 16),
            topic("u", topic_id(2)),
            MetadataRecord::Partition(partition(topic_id(2), 0, &[B, C])),
            MetadataRecord::Partition(partition(topic_id(2), 1, &[C, A])),
            MetadataRecord::PartitionChange(PartitionChangeRecord {
                leader: Some(B),
                ..change(topic_id(1), 0)
            }),
            config("u", "retention.ms", Some("1")),
            producer_ids(2000),
        ])
        .unwrap();
    let rebuilt = MetadataImage::default().apply(&image.records()).unwrap();
    assert_eq!(rebuilt, image);
    assert_eq!(
        MetadataImage::default()
            .apply(&MetadataImage::default().records())
            .unwrap(),
        MetadataImage::default()
    );
}
