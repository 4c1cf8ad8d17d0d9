//! S3-compatible object storage for export files: verified uploads (single PUT or multipart),
//! downloads and deletes, signed by rust-s3 and each answer read within bounds (`exchange`).

mod exchange;
mod upload;

use std::path::Path;
use std::time::Duration;

use s3::command::Command;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::ListBucketResult;
use s3::{Bucket, Region};

use exchange::exchange;
pub use upload::{LocalDigests, Stored, Uploaded};

use crate::config::S3Settings;
use crate::export::format::FileFormat;
use crate::io_error::IoError;

/// Files larger than this go up in parts of this size (S3's minimum part is 5 MiB).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
/// Keys per listing request: about 40 KiB of XML, within the answer limit.
const LIST_PAGE: usize = 100;
/// The most keys one listing takes (a site's files of one tenant).
const MAX_LISTED: usize = 1_000_000;
/// What storage serves a file as: an export file its format's content type; an archive
/// (`….ndjson`, compressed as export files are) by its last extension. The file itself, never
/// a transfer encoding a client would undo.
fn content_type(key: &str) -> &'static str {
    if let Some(format) = FileFormat::of_path(key) {
        return format.content_type();
    }
    match key.rsplit('.').next() {
        Some("gz") => "application/gzip",
        Some("zst") => "application/zstd",
        Some("ndjson") => "application/x-ndjson",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// Signing the request failed (credentials, a key or header it cannot carry).
    #[error("s3: {}", crate::logging::peer_text(&.0.to_string(), 300))]
    S3(#[from] S3Error),
    /// Storage answered with a status outside 2xx; `answer` is the start of its body.
    #[error("s3: HTTP {status}: {}", crate::logging::peer_text(.answer, 300))]
    Refused { status: u16, answer: String },
    /// No answer: unreachable, reset, or not within the request timeout.
    #[error("s3: {}", crate::logging::peer_text(.0, 300))]
    Unanswered(String),
    /// An answer edgecron cannot use (too long, or not what S3 answers).
    #[error("s3: {}", crate::logging::peer_text(.0, 300))]
    Unexpected(String),
    #[error("s3 credentials: {0}")]
    Credentials(String),
    #[error("upload of {key} not verified: {detail}")]
    Unverified { key: String, detail: String },
    /// The key holds other content than the file meant for it; it is left as it is.
    #[error("s3: {key} already holds other content, left as it is: {detail}")]
    Conflict { key: String, detail: String },
}

impl StorageError {
    /// Whether the storage as a whole failed, rather than this one file: unreachable, failing
    /// (5xx), refusing these credentials (401, 403) or without the bucket. Then the run's
    /// remaining uploads are left for the next run, and no file accrues a backoff of its own,
    /// so the whole queue goes as soon as the storage is right again.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StorageError::Refused { status, answer } => {
                *status >= 500
                    || matches!(status, 401 | 403)
                    || (*status == 404 && answer.contains("NoSuchBucket"))
            }
            StorageError::S3(_) | StorageError::Unanswered(_) => true,
            StorageError::Io(_) | StorageError::Credentials(_) => false,
            StorageError::Unexpected(_)
            | StorageError::Unverified { .. }
            | StorageError::Conflict { .. } => false,
        }
    }
}

pub struct Storage {
    bucket: Box<Bucket>,
    prefix: String,
    request_timeout: Duration,
}

impl Storage {
    /// The configured bucket.
    pub fn new(settings: &S3Settings) -> Result<Storage, StorageError> {
        Storage::for_bucket(settings, &settings.bucket)
    }

    /// Another bucket on the same storage, with the same credentials (for `s3://` URIs).
    pub fn for_bucket(settings: &S3Settings, bucket_name: &str) -> Result<Storage, StorageError> {
        let region = match &settings.endpoint {
            Some(endpoint) => Region::Custom {
                region: settings.region.clone(),
                endpoint: endpoint.clone(),
            },
            None => settings.region.parse().map_err(|error| {
                StorageError::Credentials(format!("region {:?}: {error}", settings.region))
            })?,
        };
        let credentials = match &settings.credentials {
            Some((key, secret)) => {
                Credentials::new(Some(key), Some(secret.expose()), None, None, None)
            }
            // The AWS SDK's default chain, as the replaced system's hosts are set up for
            // (environment, profile, container and instance credentials), read afresh for each
            // run so temporary ones are current; none found: anonymous, which an
            // S3-compatible store may allow and AWS answers 403 (the storage's backoff).
            None => Credentials::default().or_else(|error| {
                log::debug!("s3: no credentials from the AWS default chain ({error}); anonymous");
                Credentials::anonymous()
            }),
        }
        .map_err(|error| StorageError::Credentials(error.to_string()))?;
        let mut bucket = Bucket::new(bucket_name, region, credentials)?;
        if settings.path_style {
            bucket = bucket.with_path_style();
        }
        Ok(Storage {
            bucket,
            prefix: settings.prefix.clone(),
            request_timeout: settings.request_timeout,
        })
    }

    /// Deletes an object; deleting one that is already gone succeeds, as S3 answers.
    pub fn delete(&self, key: &str) -> Result<(), StorageError> {
        exchange(
            &self.bucket,
            key,
            Command::DeleteObject,
            self.request_timeout,
        )?;
        Ok(())
    }

    /// Writes the object at `key` into `out`, streamed as it arrives.
    pub fn download(
        &self,
        key: &str,
        out: &mut (impl std::io::Write + Send),
    ) -> Result<(), StorageError> {
        exchange::download(&self.bucket, key, self.request_timeout, u64::MAX, out)?;
        Ok(())
    }

    /// Writes the object at `key` into a new file at `path`.
    pub fn download_to(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let mut out = std::fs::File::create(path)
            .map_err(IoError::during(format!("creating {}", path.display())))?;
        self.download(key, &mut out)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket.name
    }

    /// Every key under `prefix`, a page of `LIST_PAGE` keys per request (so each answer stays
    /// within the answer limit). Each page must go on past the last (S3 lists keys in order),
    /// and at most `MAX_LISTED` keys are taken: a peer that would page forever is refused.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut continuation_token = None;
        loop {
            let command = Command::ListObjectsV2 {
                prefix: prefix.to_string(),
                delimiter: None,
                continuation_token: continuation_token.take(),
                start_after: None,
                max_keys: Some(LIST_PAGE),
            };
            let answer = exchange(&self.bucket, "/", command, self.request_timeout)?;
            let page: ListBucketResult = quick_xml::de::from_str(&answer.text())
                .map_err(|error| StorageError::Unexpected(format!("a listing: {error}")))?;
            let before = keys.last().cloned();
            keys.extend(page.contents.into_iter().map(|object| object.key));
            let went_on = keys.last().is_some_and(|last| before.as_ref() < Some(last));
            if page.is_truncated && !went_on {
                return Err(StorageError::Unexpected(
                    "a listing page that says more follow without going past the last key".into(),
                ));
            }
            if keys.len() > MAX_LISTED {
                return Err(StorageError::Unexpected(format!(
                    "a listing of more than {MAX_LISTED} keys under {prefix}"
                )));
            }
            match page.next_continuation_token {
                Some(token) if page.is_truncated => continuation_token = Some(token),
                _ => return Ok(keys),
            }
        }
    }

    /// The object key of a file at `relative` (to the data dir).
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exports_and_archives_are_served_as_what_they_are() {
        for (key, expected) in [
            (
                "e/acme/interaction_history/year=2026/month=01/day=01/b.parquet",
                "application/vnd.apache.parquet",
            ),
            (
                "e/acme/interaction_history/year=2026/month=01/day=01/b.json",
                "application/x-ndjson",
            ),
            (
                "archive/export_logs/export_logs-x.ndjson",
                "application/x-ndjson",
            ),
            (
                "archive/export_logs/export_logs-x.ndjson.gz",
                "application/gzip",
            ),
            (
                "archive/audit_log/splunk-too-old-x.ndjson.zst",
                "application/zstd",
            ),
            ("reports/acme/r.csv", "application/octet-stream"),
        ] {
            assert_eq!(super::content_type(key), expected, "{key}");
        }
    }
}
