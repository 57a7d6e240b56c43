//! Where a new partition's replicas go: Kafka's assignment of replicas to
//! brokers (`AdminUtils.assignReplicasToBrokers`), rack-unaware and
//! rack-aware, as a pure function of the brokers, the partitions and a
//! starting point.
//!
//! Partition `p`'s first replica (its preferred leader) is the broker at
//! `(p + start) % n` in the broker list, so leadership stripes evenly over
//! the brokers; the other replicas follow at a shift that grows by one after
//! every full round of the list, so a broker's followers are not always the
//! same neighbours and a failed broker's load spreads over the others. The
//! start and the shift come from the caller (the controller derives them
//! from the topic's random id, so topics start at different brokers and a
//! topic that grows keeps its striping).
//!
//! Rack-aware placement, used as soon as one broker has a `broker.rack`,
//! first orders the brokers so that racks alternate (one broker of each
//! rack in turn), then places each further replica on the next broker
//! whose rack holds no replica of the partition yet, while such a rack
//! exists: a partition spans `min(replication factor, racks)` racks. A
//! broker without a rack counts as a rack of its own kind (KRaft's placer
//! does the same; ZooKeeper-era Kafka refused the mix).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::metadata::records::BrokerId;

/// A broker replicas may be placed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    /// Its `node.id`.
    pub id: BrokerId,
    /// Its `broker.rack`.
    pub rack: Option<String>,
}

/// Where the striping starts: the first replica's position in the broker
/// list for partition 0, and the followers' initial shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementStart {
    /// Position of partition 0's first replica.
    pub start_index: usize,
    /// Initial shift of the followers after the first replica.
    pub shift: usize,
}

impl PlacementStart {
    /// A start taken from `seed`'s bits (a topic id's, say): the same seed
    /// always gives the same start.
    #[must_use]
    pub fn from_seed(seed: [u8; 16]) -> Self {
        let word = |bytes: &[u8]| {
            bytes.iter().fold(0_usize, |word, &byte| {
                word.rotate_left(8) ^ usize::from(byte)
            })
        };
        Self {
            start_index: word(&seed[..8]),
            shift: word(&seed[8..]),
        }
    }
}

/// Why replicas cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The replication factor is not positive.
    #[error("Replication factor must be larger than 0, or -1 to use the default value.")]
    ReplicationFactorNotPositive,
    /// More replicas per partition than brokers to hold them (Kafka's
    /// `INVALID_REPLICATION_FACTOR` message).
    #[error("Replication factor: {requested} larger than available brokers: {available}.")]
    ReplicationFactorTooLarge {
        /// The replication factor asked for.
        requested: i16,
        /// The brokers available.
        available: usize,
    },
}

/// The replicas of partitions `partitions` (indexes of one topic), each list
/// led by its preferred leader, over `brokers` (any order; duplicates are
/// ignored).
///
/// # Errors
/// [`PlacementError`] if `replication_factor` is not positive or exceeds the
/// brokers.
pub fn place_replicas(
    brokers: &[PlacementBroker],
    partitions: Range<i32>,
    replication_factor: i16,
    start: PlacementStart,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let by_id: BTreeMap<BrokerId, Option<&str>> = brokers
        .iter()
        .map(|broker| (broker.id, broker.rack.as_deref()))
        .collect();
    let replicas = usize::try_from(replication_factor)
        .ok()
        .filter(|&replicas| replicas > 0)
        .ok_or(PlacementError::ReplicationFactorNotPositive)?;
    if replicas > by_id.len() {
        return Err(PlacementError::ReplicationFactorTooLarge {
            requested: replication_factor,
            available: by_id.len(),
        });
    }
    let rack_aware = by_id.values().any(Option::is_some);
    let ordered = if rack_aware {
        rack_alternated(&by_id)
    } else {
        by_id.keys().copied().collect()
    };
    let racks: BTreeSet<Option<&str>> = by_id.values().copied().collect();
    let count = ordered.len();
    let start_index = start.start_index % count;
    Ok(partitions
        .map(|partition| {
            let partition = usize::try_from(partition.max(0)).unwrap_or(0);
            // One more step of shift after every full round of the list.
            let shift = start.shift % count + partition / count;
            let first = (partition + start_index) % count;
            if rack_aware {
                rack_aware_replicas(&ordered, &by_id, racks.len(), first, shift, replicas)
            } else {
                (0..replicas)
                    .map(|replica| match replica {
                        0 => ordered[first],
                        _ => ordered[follower_index(first, shift, replica - 1, count)],
                    })
                    .collect()
            }
        })
        .collect())
}

/// The position of the `nth` follower of a partition whose first replica
/// is at `first`: never `first` itself, so a partition's replicas are
/// distinct while `nth < count - 1`.
fn follower_index(first: usize, shift: usize, nth: usize, count: usize) -> usize {
    if count == 1 {
        return first;
    }
    (first + 1 + (shift + nth) % (count - 1)) % count
}

/// The brokers ordered so that racks alternate: the racks in name order
/// (brokers without a rack first), each rack's brokers by id, one broker of
/// each rack in turn.
fn rack_alternated(by_id: &BTreeMap<BrokerId, Option<&str>>) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for (&id, &rack) in by_id {
        by_rack.entry(rack).or_default().push(id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|depth| {
            by_rack
                .values()
                .filter_map(move |ids| ids.get(depth).copied())
        })
        .collect()
}

/// One partition's replicas over the rack-alternated list: each follower
/// on the next broker (in the striping order) whose rack has no replica yet
/// while some rack has none, and that holds no replica yet.
fn rack_aware_replicas(
    ordered: &[BrokerId],
    by_id: &BTreeMap<BrokerId, Option<&str>>,
    rack_count: usize,
    first: usize,
    shift: usize,
    replicas: usize,
) -> Vec<BrokerId> {
    let count = ordered.len();
    let leader = ordered[first];
    let mut chosen = vec![leader];
    let mut racks_used: BTreeSet<Option<&str>> = BTreeSet::from([by_id[&leader]]);
    let mut step = 0;
    while chosen.len() < replicas {
        let candidate = ordered[follower_index(first, shift * rack_count, step, count)];
        step += 1;
        let rack = by_id[&candidate];
        let rack_ok = !racks_used.contains(&rack) || racks_used.len() == rack_count;
        // The candidates cycle through every other broker; once every rack
        // holds a replica, any broker without one qualifies.
        if rack_ok && !chosen.contains(&candidate) {
            chosen.push(candidate);
            racks_used.insert(rack);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fjord_engine::testkit::Rng;

    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(index, rack)| PlacementBroker {
                id: BrokerId(index as i32 + 1),
                rack: rack.map(str::to_owned),
            })
            .collect()
    }

    fn start(start_index: usize, shift: usize) -> PlacementStart {
        PlacementStart { start_index, shift }
    }

    #[test]
    fn six_partitions_on_three_brokers_stripe_leaders_and_followers() {
        let placed = place_replicas(&brokers(&[None, None, None]), 0..6, 2, start(0, 0)).unwrap();
        let ids = |list: &[i32]| list.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
        assert_eq!(
            placed,
            [
                ids(&[1, 2]),
                ids(&[2, 3]),
                ids(&[3, 1]),
                // A full round done: the followers shift by one more.
                ids(&[1, 3]),
                ids(&[2, 1]),
                ids(&[3, 2]),
            ]
        );
    }

    #[test]
    fn the_replication_factor_is_checked_against_the_brokers() {
        let three = brokers(&[None, None, None]);
        assert_eq!(
            place_replicas(&three, 0..1, 4, start(0, 0)),
            Err(PlacementError::ReplicationFactorTooLarge {
                requested: 4,
                available: 3
            })
        );
        assert_eq!(
            place_replicas(&three, 0..1, 0, start(0, 0)),
            Err(PlacementError::ReplicationFactorNotPositive)
        );
        assert_eq!(
            PlacementError::ReplicationFactorTooLarge {
                requested: 4,
                available: 3
            }
            .to_string(),
            "Replication factor: 4 larger than available brokers: 3."
        );
    }

    #[test]
    fn rack_alternation_takes_one_broker_of_each_rack_in_turn() {
        let by_id: BTreeMap<BrokerId, Option<&str>> = [
            (BrokerId(1), Some("a")),
            (BrokerId(2), Some("a")),
            (BrokerId(3), Some("b")),
            (BrokerId(4), Some("c")),
            (BrokerId(5), Some("c")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            rack_alternated(&by_id),
            [1, 3, 4, 2, 5].map(BrokerId).to_vec()
        );
    }

    /// Seeded property test: for random broker sets (with and without
    /// racks), partition ranges, replication factors and starts, every
    /// partition gets distinct replicas on known brokers, spans as many
    /// racks as it can, leaders spread evenly, and the placement of a
    /// range is the same as that range's part of a longer one (a topic
    /// that grows keeps its striping).
    #[test]
    fn placements_are_distinct_rack_spread_and_balanced() {
        let mut rng = Rng::from_env("FJORD_PLACEMENT_SEED", "placement", 7);
        for _ in 0..500 {
            let count = rng.between(1, 9) as usize;
            let rack_names = ["r1", "r2", "r3"];
            let with_racks = rng.chance(1, 2);
            let racks: Vec<Option<&str>> = (0..count)
                .map(|_| with_racks.then(|| *rng.pick(&rack_names)))
                .collect();
            let brokers = brokers(&racks);
            let factor = rng.between(1, count as u64) as i16;
            let partitions = rng.between(1, 40) as i32;
            let begin = start(rng.below(1000) as usize, rng.below(1000) as usize);
            let placed = place_replicas(&brokers, 0..partitions, factor, begin).unwrap();
            let rack_of: BTreeMap<BrokerId, Option<&str>> =
                brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
            let distinct_racks = rack_of.values().collect::<BTreeSet<_>>().len();
            let mut leaders: BTreeMap<BrokerId, usize> = BTreeMap::new();
            for replicas in &placed {
                assert_eq!(replicas.len(), factor as usize, "{racks:?}");
                let unique: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(
                    unique.len(),
                    replicas.len(),
                    "duplicate replica: {replicas:?}"
                );
                assert!(replicas.iter().all(|id| rack_of.contains_key(id)));
                let spanned: BTreeSet<_> = replicas.iter().map(|id| rack_of[id]).collect();
                assert_eq!(
                    spanned.len(),
                    (factor as usize).min(distinct_racks),
                    "{replicas:?} over racks {racks:?}"
                );
                *leaders.entry(replicas[0]).or_default() += 1;
            }
            // Leaders stripe round-robin: counts differ by at most one.
            let most = leaders.values().max().copied().unwrap_or(0);
            let least = if leaders.len() == count {
                leaders.values().min().copied().unwrap_or(0)
            } else {
                0
            };
            assert!(
                most - least <= 1,
                "leaders {leaders:?} over {count} brokers"
            );
            let split = rng.between(0, partitions as u64) as i32;
            let tail = place_replicas(&brokers, split..partitions, factor, begin).unwrap();
            assert_eq!(tail[..], placed[split as usize..]);
        }
    }
}
