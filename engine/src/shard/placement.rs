//! Where shards run and which shard owns a partition.
//!
//! A partition's shard is a pure function of its topic, partition index and
//! the shard count, so every shard routes any request without asking
//! anyone. Shard `i` runs on the `i`-th CPU this process may use.

use crate::types::TopicPartition;

/// The shard that owns `partition` among `shard_count` shards: a stable hash
/// of the topic name plus the partition index, so a topic's partitions
/// spread round-robin over the shards.
///
/// # Panics
/// If `shard_count` is 0.
#[must_use]
pub fn shard_for(partition: &TopicPartition, shard_count: usize) -> usize {
    assert!(shard_count > 0, "an engine has at least one shard");
    let topic_hash = u64::from(crc32c::crc32c(partition.topic.as_bytes()));
    ((topic_hash + u64::from(partition.partition.unsigned_abs())) % shard_count as u64) as usize
}

/// The CPUs shards run on, in order: the online CPUs this process may run
/// on (so `taskset -c 2-5 fjord --set cores=4` puts the shards on 2 to 5),
/// lowest first. glommio lists the online CPUs in a hash set; unsorted,
/// `cores=1` would land on a different CPU from one start to the next.
pub(super) fn shard_cpus(online: impl Iterator<Item = usize>, allowed: &[usize]) -> Vec<usize> {
    let mut cpus: Vec<usize> = online
        .filter(|cpu| allowed.is_empty() || allowed.contains(cpu))
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPUs in this process's affinity mask; empty if it cannot be read,
/// which [`shard_cpus`] takes as no restriction.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain bits for which all zeroes is valid, and
    // sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let read =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
    if read != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shard_cpus;

    #[test]
    fn shards_take_the_lowest_allowed_online_cpus_in_order() {
        assert_eq!(shard_cpus([3, 0, 2, 1].into_iter(), &[]), vec![0, 1, 2, 3]);
        assert_eq!(shard_cpus([3, 0, 2, 1].into_iter(), &[2, 3, 7]), vec![2, 3]);
    }

    #[test]
    fn the_process_may_run_on_some_cpu() {
        assert!(!super::allowed_cpus().is_empty());
    }
}
