//! ApiVersions: the APIs and version ranges fjord serves, exactly.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{ApiSupport, SUPPORTED};

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ApiVersions,
    min: 0,
    max: 4,
};

fn advertised() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|support| {
            ApiVersion::default()
                .with_api_key(support.key as i16)
                .with_min_version(support.min)
                .with_max_version(support.max)
        })
        .collect()
}

/// Answers ApiVersions.
#[must_use]
pub fn handle(_request: &ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(advertised())
}

/// The v0 answer to an ApiVersions version newer than ours (KIP-511):
/// `UNSUPPORTED_VERSION` plus our ranges, so the client retries with one we
/// serve.
#[must_use]
pub fn unsupported_version() -> kafka_protocol::messages::ResponseKind {
    kafka_protocol::messages::ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(advertised()),
    )
}
