//! The records of `__consumer_offsets`, in Kafka's own key and value
//! schemas (`OffsetCommitKey` v1, `OffsetCommitValue` v3,
//! `GroupMetadataKey` v2, `GroupMetadataValue` v3), so Kafka's tools
//! (`kafka-console-consumer --formatter ...OffsetsMessageFormatter`,
//! `kafka-dump-log --offsets-decoder`) read what fjord writes. A null value
//! is a tombstone: the offset or group is deleted. The crate has no codecs
//! for these internal schemas, so they are encoded here by hand (plain,
//! non-flexible versions: big-endian integers, `int16`-prefixed strings,
//! `int32`-prefixed bytes and arrays).

use bytes::{Buf, BufMut, Bytes};

/// Key version of an offset commit (v0 has the same layout).
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
const GROUP_KEY_VERSION: i16 = 2;
/// Offset commit value version written: offset, leader epoch, metadata,
/// commit timestamp.
const OFFSET_VALUE_VERSION: i16 = 3;
/// Group metadata value version written (static membership fields).
const GROUP_VALUE_VERSION: i16 = 3;

/// Why a `__consumer_offsets` record key or value does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// The record has no key.
    #[error("record without a key")]
    MissingKey,
    /// The bytes end inside a field.
    #[error("record too short for its {0}")]
    TooShort(&'static str),
    /// A schema version Kafka never wrote.
    #[error("unknown {schema} version {version}")]
    UnknownVersion {
        /// Which schema: key, offset value or group value.
        schema: &'static str,
        /// The version read.
        version: i16,
    },
    /// A null where the schema has a non-nullable string.
    #[error("null where a string is required")]
    NullString,
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
}

/// The key of a `__consumer_offsets` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// A committed offset of one partition.
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A group's membership and assignment.
    Group(String),
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the record before `offset`, -1 if unknown.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

/// One member in a stored group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// The member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client host.
    pub client_host: String,
    /// Rebalance timeout, ms.
    pub rebalance_timeout_ms: i32,
    /// Session timeout, ms.
    pub session_timeout_ms: i32,
    /// The metadata of the selected protocol (the subscription).
    pub subscription: Bytes,
    /// The assignment the leader gave it.
    pub assignment: Bytes,
}

/// A group's metadata as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    /// The protocol type (`consumer`, `connect`, ...), empty for none.
    pub protocol_type: String,
    /// The generation.
    pub generation: i32,
    /// The selected protocol (assignor).
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// When the group last changed state (ms since the epoch).
    pub state_timestamp_ms: i64,
    /// The members.
    pub members: Vec<StoredMember>,
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    // Group ids, topics and member ids come from requests whose strings
    // carry an int16 length, so they fit.
    let length = i16::try_from(value.len()).unwrap_or(i16::MAX);
    out.put_i16(length);
    out.extend_from_slice(&value.as_bytes()[..length.unsigned_abs().into()]);
}

fn put_nullable_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    out.put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
    out.extend_from_slice(value);
}

impl RecordKey {
    /// The encoded key.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, group);
                put_string(&mut out, topic);
                out.put_i32(*partition);
            }
            Self::Group(group) => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        out
    }

    /// Decodes a key.
    ///
    /// # Errors
    /// [`RecordDecodeError`] if the bytes are not a known key version.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        let version = get_i16(&mut bytes)?;
        match version {
            0 | 1 => Ok(Self::Offset {
                group: get_string(&mut bytes)?,
                topic: get_string(&mut bytes)?,
                partition: get_i32(&mut bytes)?,
            }),
            2 => Ok(Self::Group(get_string(&mut bytes)?)),
            version => Err(RecordDecodeError::UnknownVersion {
                schema: "key",
                version,
            }),
        }
    }
}

impl OffsetValue {
    /// The encoded value (v3).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.metadata.len());
        out.put_i16(OFFSET_VALUE_VERSION);
        out.put_i64(self.offset);
        out.put_i32(self.leader_epoch);
        put_string(&mut out, &self.metadata);
        out.put_i64(self.commit_timestamp_ms);
        out
    }

    /// Decodes any value version Kafka writes (v0-v3; v4's flexible
    /// tagged fields after the v3 fields are ignored).
    ///
    /// # Errors
    /// [`RecordDecodeError`] if the bytes do not decode.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        let version = get_i16(&mut bytes)?;
        if !(0..=4).contains(&version) {
            return Err(RecordDecodeError::UnknownVersion {
                schema: "offset value",
                version,
            });
        }
        let offset = get_i64(&mut bytes)?;
        let leader_epoch = if version >= 3 {
            get_i32(&mut bytes)?
        } else {
            -1
        };
        let metadata = if version >= 4 {
            get_compact_string(&mut bytes)?
        } else {
            get_string(&mut bytes)?
        };
        let commit_timestamp_ms = get_i64(&mut bytes)?;
        Ok(Self {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    /// The encoded value (v3).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.put_i16(GROUP_VALUE_VERSION);
        put_string(&mut out, &self.protocol_type);
        out.put_i32(self.generation);
        put_nullable_string(&mut out, self.protocol.as_deref());
        put_nullable_string(&mut out, self.leader.as_deref());
        out.put_i64(self.state_timestamp_ms);
        out.put_i32(i32::try_from(self.members.len()).unwrap_or(i32::MAX));
        for member in &self.members {
            put_string(&mut out, &member.member_id);
            put_nullable_string(&mut out, member.instance_id.as_deref());
            put_string(&mut out, &member.client_id);
            put_string(&mut out, &member.client_host);
            out.put_i32(member.rebalance_timeout_ms);
            out.put_i32(member.session_timeout_ms);
            put_bytes(&mut out, &member.subscription);
            put_bytes(&mut out, &member.assignment);
        }
        out
    }

    /// Decodes value versions 0-3.
    ///
    /// # Errors
    /// [`RecordDecodeError`] if the bytes do not decode.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        let version = get_i16(&mut bytes)?;
        if !(0..=3).contains(&version) {
            return Err(RecordDecodeError::UnknownVersion {
                schema: "group value",
                version,
            });
        }
        let protocol_type = get_string(&mut bytes)?;
        let generation = get_i32(&mut bytes)?;
        let protocol = get_nullable_string(&mut bytes)?;
        let leader = get_nullable_string(&mut bytes)?;
        let state_timestamp_ms = if version >= 2 {
            get_i64(&mut bytes)?
        } else {
            -1
        };
        let count = get_i32(&mut bytes)?;
        let count = usize::try_from(count).unwrap_or(0);
        // Every member takes at least 24 bytes: never trust the count.
        let mut members = Vec::with_capacity(count.min(bytes.len() / 24));
        for _ in 0..count {
            let member_id = get_string(&mut bytes)?;
            let instance_id = if version >= 3 {
                get_nullable_string(&mut bytes)?
            } else {
                None
            };
            let client_id = get_string(&mut bytes)?;
            let client_host = get_string(&mut bytes)?;
            let rebalance_timeout_ms = if version >= 1 {
                get_i32(&mut bytes)?
            } else {
                0
            };
            let session_timeout_ms = get_i32(&mut bytes)?;
            let rebalance_timeout_ms = if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            };
            let subscription = get_bytes(&mut bytes)?;
            let assignment = get_bytes(&mut bytes)?;
            members.push(StoredMember {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        Ok(Self {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

fn get_i16(bytes: &mut &[u8]) -> Result<i16, RecordDecodeError> {
    if bytes.remaining() < 2 {
        return Err(RecordDecodeError::TooShort("int16"));
    }
    Ok(bytes.get_i16())
}

fn get_i32(bytes: &mut &[u8]) -> Result<i32, RecordDecodeError> {
    if bytes.remaining() < 4 {
        return Err(RecordDecodeError::TooShort("int32"));
    }
    Ok(bytes.get_i32())
}

fn get_i64(bytes: &mut &[u8]) -> Result<i64, RecordDecodeError> {
    if bytes.remaining() < 8 {
        return Err(RecordDecodeError::TooShort("int64"));
    }
    Ok(bytes.get_i64())
}

fn take_utf8(bytes: &mut &[u8], length: usize) -> Result<String, RecordDecodeError> {
    if bytes.remaining() < length {
        return Err(RecordDecodeError::TooShort("string"));
    }
    let text =
        String::from_utf8(bytes[..length].to_vec()).map_err(|_| RecordDecodeError::NotUtf8)?;
    bytes.advance(length);
    Ok(text)
}

fn get_nullable_string(bytes: &mut &[u8]) -> Result<Option<String>, RecordDecodeError> {
    let length = get_i16(bytes)?;
    match usize::try_from(length) {
        Ok(length) => take_utf8(bytes, length).map(Some),
        Err(_) => Ok(None),
    }
}

fn get_string(bytes: &mut &[u8]) -> Result<String, RecordDecodeError> {
    get_nullable_string(bytes)?.ok_or(RecordDecodeError::NullString)
}

fn get_compact_string(bytes: &mut &[u8]) -> Result<String, RecordDecodeError> {
    let mut length: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&byte) = bytes.first() else {
            return Err(RecordDecodeError::TooShort("varint"));
        };
        bytes.advance(1);
        length |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    // A varint of at most 35 bits fits a `usize` on 64-bit targets.
    let length = usize::try_from(length.saturating_sub(1))
        .map_err(|_| RecordDecodeError::TooShort("string"))?;
    take_utf8(bytes, length)
}

fn get_bytes(bytes: &mut &[u8]) -> Result<Bytes, RecordDecodeError> {
    let length = get_i32(bytes)?;
    let Ok(length) = usize::try_from(length) else {
        return Ok(Bytes::new());
    };
    if bytes.remaining() < length {
        return Err(RecordDecodeError::TooShort("bytes"));
    }
    let value = Bytes::copy_from_slice(&bytes[..length]);
    bytes.advance(length);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `GroupMetadataManager.offsetCommitKey("g", tp("t", 3))`.
    #[test]
    fn offset_key_matches_kafkas_layout() {
        let key = RecordKey::Offset {
            group: "g".to_owned(),
            topic: "t".to_owned(),
            partition: 3,
        };
        assert_eq!(
            key.encode(),
            [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3].to_vec()
        );
        assert_eq!(RecordKey::decode(&key.encode()).unwrap(), key);
    }

    #[test]
    fn values_round_trip_and_truncations_fail() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 0,
            metadata: "m".to_owned(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(OffsetValue::decode(&offset.encode()).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".to_owned(),
            generation: 7,
            protocol: Some("range".to_owned()),
            leader: Some("a".to_owned()),
            state_timestamp_ms: 5,
            members: vec![StoredMember {
                member_id: "a".to_owned(),
                instance_id: Some("i".to_owned()),
                client_id: "c".to_owned(),
                client_host: "/127.0.0.1".to_owned(),
                rebalance_timeout_ms: 300,
                session_timeout_ms: 100,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let encoded = group.encode();
        assert_eq!(GroupValue::decode(&encoded).unwrap(), group);
        for cut in 0..encoded.len() {
            assert!(GroupValue::decode(&encoded[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        assert_eq!(
            RecordKey::decode(&[0]),
            Err(RecordDecodeError::TooShort("int16"))
        );
        assert_eq!(
            RecordKey::decode(&[0, 9]),
            Err(RecordDecodeError::UnknownVersion {
                schema: "key",
                version: 9
            })
        );
        assert_eq!(
            RecordKey::decode(&[0, 2, 0xff, 0xff]),
            Err(RecordDecodeError::NullString)
        );
        assert_eq!(
            RecordKey::decode(&[0, 2, 0, 1, 0xff]),
            Err(RecordDecodeError::NotUtf8)
        );
    }
}
