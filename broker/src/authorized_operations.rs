//! The operations a client may perform on a resource, as the
//! `*_authorized_operations` fields of DescribeCluster, Metadata and
//! DescribeTopicPartitions carry them (KIP-430): an `int32` with bit
//! `1 << code` set for each of Kafka's `AclOperation` codes allowed.
//!
//! fjord has no authorizer. With none configured, Kafka answers every
//! operation its ACLs define for the resource type
//! (`AclEntry.supportedOperations`), and so does fjord. A request that does
//! not ask for them gets Kafka's "omitted" value, [`OMITTED`].

/// Kafka's `AclOperation` codes that ACLs on topics and the cluster use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
enum AclOperation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

/// The bit field with a bit set for each of `operations`.
const fn bit_field(operations: &[AclOperation]) -> i32 {
    let mut bits = 0;
    let mut index = 0;
    while index < operations.len() {
        bits |= 1 << operations[index] as i32;
        index += 1;
    }
    bits
}

/// A resource type whose operations a response reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A topic.
    Topic,
    /// The cluster.
    Cluster,
}

impl Resource {
    /// Every operation Kafka's ACLs define on this resource type, as a bit
    /// field: what a client may do when no authorizer restricts it.
    #[must_use]
    pub const fn supported_operations(self) -> i32 {
        use AclOperation::{
            Alter, AlterConfigs, ClusterAction, Create, Delete, Describe, DescribeConfigs,
            IdempotentWrite, Read, Write,
        };
        match self {
            Self::Topic => bit_field(&[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ]),
            Self::Cluster => bit_field(&[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ]),
        }
    }
}

/// Kafka's value for authorized operations the request did not ask for.
pub const OMITTED: i32 = i32::MIN;

/// The `authorized_operations` field of `resource` in a response: every
/// supported operation if the request asked for them, else [`OMITTED`].
#[must_use]
pub const fn authorized_operations(resource: Resource, requested: bool) -> i32 {
    if requested {
        resource.supported_operations()
    } else {
        OMITTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes whose bits are set in `bits`.
    fn codes(bits: i32) -> Vec<i32> {
        (0..32).filter(|code| bits & (1 << code) != 0).collect()
    }

    #[test]
    fn topic_and_cluster_operations_are_kafkas_supported_sets() {
        // READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS: never CLUSTER_ACTION or IDEMPOTENT_WRITE on a topic.
        assert_eq!(
            codes(Resource::Topic.supported_operations()),
            [3, 4, 5, 6, 7, 8, 10, 11]
        );
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS, IDEMPOTENT_WRITE: no READ, WRITE or DELETE, and no
        // token operations (those belong to users).
        assert_eq!(
            codes(Resource::Cluster.supported_operations()),
            [5, 7, 8, 9, 10, 11, 12]
        );
    }

    #[test]
    fn operations_not_asked_for_are_omitted() {
        for resource in [Resource::Topic, Resource::Cluster] {
            assert_eq!(authorized_operations(resource, false), i32::MIN);
            assert_eq!(
                authorized_operations(resource, true),
                resource.supported_operations()
            );
        }
    }
}
