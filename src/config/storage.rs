//! Where export files and archives go: S3-compatible storage from `S3_*`, the replaced
//! system's `EXPORT_ARCHIVE_*`, and the AWS SDK's own names as fallbacks (`AWS_REGION`,
//! `AWS_ENDPOINT_URL_S3`; credentials from the AWS default chain when no `S3_*` keys are set).

use std::time::Duration;

use super::variables::{
    AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, AWS_REGION, EXPORT_ARCHIVE_BUCKET,
    EXPORT_ARCHIVE_REGION, S3_ACCESS_KEY_ID, S3_BUCKET, S3_ENDPOINT, S3_PATH_STYLE, S3_PREFIX,
    S3_REGION, S3_REQUEST_TIMEOUT_SECS, S3_SECRET_ACCESS_KEY,
};
use super::{ConfigError, Environment, Secret};

/// S3-compatible storage for export files, when `S3_BUCKET` is set.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `None`: AWS itself, by region.
    pub endpoint: Option<String>,
    pub region: String,
    /// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY`, both or neither. Neither: the AWS
    /// default chain, read as each run starts (`AWS_ACCESS_KEY_ID`..., the profile, container
    /// and instance credentials), else anonymous access.
    pub credentials: Option<(String, Secret)>,
    /// Prepended to the path relative to the data dir.
    pub prefix: String,
    pub path_style: bool,
    /// `S3_REQUEST_TIMEOUT_SECS`: the longest one request to storage may take.
    pub request_timeout: Duration,
}

/// `S3_PREFIX`: a key prefix inside the bucket. A leading `/` or a `..` part would let
/// path-style requests leave the bucket (`../other/` writes into another one) while the store
/// records this one; a backslash or a control character names no sane key.
fn parse_prefix(prefix: &str) -> Result<String, ConfigError> {
    let refused = |why: &str| {
        Err(ConfigError(format!(
            "S3_PREFIX: {prefix:?} {why}; give a key prefix such as `edgecron/`"
        )))
    };
    if prefix.starts_with('/') {
        return refused("starts with /");
    }
    if prefix.split('/').any(|part| part == ".." || part == ".") {
        return refused("has a `.` or `..` part");
    }
    if prefix.chars().any(|c| c == '\\' || c.is_control()) {
        return refused("has a backslash or a control character");
    }
    Ok(prefix.to_string())
}

pub(super) fn parse_s3(env: &Environment) -> Result<Option<S3Settings>, ConfigError> {
    let Some(bucket) = env.text(&S3_BUCKET) else {
        return Ok(None);
    };
    parse_storage(env, bucket, storage_region(env)).map(Some)
}

/// `S3_REGION`, else the AWS SDK's `AWS_REGION` or `AWS_DEFAULT_REGION`.
fn storage_region(env: &Environment) -> Option<&str> {
    env.text(&S3_REGION)
        .or_else(|| env.text(&AWS_REGION))
        .or_else(|| env.text(&AWS_DEFAULT_REGION))
}

/// `EXPORT_ARCHIVE_BUCKET` (and `EXPORT_ARCHIVE_REGION`), the replaced system's archive
/// settings: where `export-log-cleanup` archives, on the storage `S3_*` describes.
pub(super) fn parse_export_archive(env: &Environment) -> Result<Option<S3Settings>, ConfigError> {
    let Some(bucket) = env.text(&EXPORT_ARCHIVE_BUCKET) else {
        if env.text(&EXPORT_ARCHIVE_REGION).is_some() {
            return Err(ConfigError(
                "EXPORT_ARCHIVE_REGION: set without EXPORT_ARCHIVE_BUCKET".into(),
            ));
        }
        return Ok(None);
    };
    let region = env
        .text(&EXPORT_ARCHIVE_REGION)
        .or_else(|| storage_region(env));
    parse_storage(env, bucket, region).map(Some)
}

fn parse_storage(
    env: &Environment,
    bucket: &str,
    region: Option<&str>,
) -> Result<S3Settings, ConfigError> {
    // The AWS SDK's names for an S3-compatible endpoint, after edgecron's own.
    let endpoint = [&S3_ENDPOINT, &AWS_ENDPOINT_URL_S3, &AWS_ENDPOINT_URL]
        .into_iter()
        .find_map(|variable| env.text(variable).map(|endpoint| (variable.name, endpoint)));
    if let Some((name, endpoint)) = endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(ConfigError(format!(
            "{name}: {endpoint:?} is not an http:// or https:// URL"
        )));
    }
    let endpoint = endpoint.map(|(_, endpoint)| endpoint.trim_end_matches('/').to_string());
    let credentials = match (env.text(&S3_ACCESS_KEY_ID), env.text(&S3_SECRET_ACCESS_KEY)) {
        (Some(key), Some(secret)) => Some((key.to_string(), Secret::new(secret.to_string()))),
        (None, None) => None,
        _ => {
            return Err(ConfigError(
                "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither".into(),
            ));
        }
    };
    Ok(S3Settings {
        bucket: bucket.to_string(),
        endpoint,
        region: region
            .or(S3_REGION.unset_value())
            .unwrap_or_default()
            .to_string(),
        credentials,
        prefix: parse_prefix(env.text_or_default(&S3_PREFIX))?,
        path_style: env.flag(&S3_PATH_STYLE)?,
        request_timeout: Duration::from_secs(env.number(&S3_REQUEST_TIMEOUT_SECS)?),
    })
}
