//! S3-compatible object storage for export files: verified uploads (single PUT or multipart),
//! downloads and deletes, signed by rust-s3 and each answer read within bounds (`exchange`).

mod exchange;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use std::time::Duration;

use s3::command::{Command, Multipart};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::{CompleteMultipartUploadData, InitiateMultipartUploadResponse, Part};
use s3::{Bucket, Region};

use exchange::exchange;

use crate::config::S3Settings;
use crate::export::format::FileFormat;
use crate::io_error::IoError;

/// Files larger than this go up in parts of this size (S3's minimum part is 5 MiB).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
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
            StorageError::Unexpected(_) | StorageError::Unverified { .. } => false,
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
        exchange::download(&self.bucket, key, self.request_timeout, out)?;
        Ok(())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket.name
    }

    /// The object key of a file at `relative` (to the data dir).
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Uploads a local file to `key` and verifies what storage received: the ETag of a single
    /// PUT is the MD5 of the body; for multipart uploads each part's ETag is checked and the
    /// object's final size. Re-uploading the same key is harmless (it is overwritten whole).
    pub fn upload(&self, local: &Path, key: &str) -> Result<u64, StorageError> {
        let io = |context: &str| {
            let context = format!("{context} {}", local.display());
            move |source| StorageError::Io(IoError { context, source })
        };
        let mut file = File::open(local).map_err(io("opening"))?;
        let size = file.metadata().map_err(io("reading"))?.len();
        if size as usize <= MULTIPART_THRESHOLD {
            let mut content = Vec::with_capacity(size as usize);
            file.read_to_end(&mut content).map_err(io("reading"))?;
            let expected = format!("{:x}", md5::compute(&content));
            let put = Command::PutObject {
                content: &content,
                content_type: content_type(key),
                custom_headers: None,
                multipart: None,
            };
            let answer = exchange(&self.bucket, key, put, self.request_timeout)?;
            let etag = answer.header("etag").map(|etag| etag.trim_matches('"'));
            return match etag {
                Some(etag) if etag == expected => Ok(size),
                other => Err(StorageError::Unverified {
                    key: key.to_string(),
                    detail: format!("ETag {other:?}, expected MD5 {expected}"),
                }),
            };
        }
        self.upload_in_parts(&mut file, key, size, local)
    }

    fn upload_in_parts(
        &self,
        file: &mut File,
        key: &str,
        size: u64,
        local: &Path,
    ) -> Result<u64, StorageError> {
        let initiate = Command::InitiateMultipartUpload {
            content_type: content_type(key),
        };
        let answer = exchange(&self.bucket, key, initiate, self.request_timeout)?;
        let upload: InitiateMultipartUploadResponse = quick_xml::de::from_str(&answer.text())
            .map_err(|error| {
                StorageError::Unexpected(format!("starting the upload of {key}: {error}"))
            })?;
        let result = (|| {
            let mut parts = Vec::new();
            let mut chunk = vec![0u8; MULTIPART_THRESHOLD];
            for part_number in 1.. {
                let filled = read_full(file, &mut chunk)
                    .map_err(IoError::during(format!("reading {}", local.display())))?;
                if filled == 0 {
                    break;
                }
                let body = &chunk[..filled];
                let expected = format!("{:x}", md5::compute(body));
                let put = Command::PutObject {
                    content: body,
                    content_type: content_type(key),
                    custom_headers: None,
                    multipart: Some(Multipart::new(part_number, &upload.upload_id)),
                };
                let answer = exchange(&self.bucket, key, put, self.request_timeout)?;
                let part = Part {
                    part_number,
                    etag: answer.header("etag").unwrap_or_default().to_string(),
                };
                if part.etag.trim_matches('"') != expected {
                    return Err(StorageError::Unverified {
                        key: key.to_string(),
                        detail: format!(
                            "part {part_number} ETag {}, expected MD5 {expected}",
                            part.etag
                        ),
                    });
                }
                parts.push(part);
            }
            let complete = Command::CompleteMultipartUpload {
                upload_id: &upload.upload_id,
                data: CompleteMultipartUploadData { parts },
            };
            let answer = exchange(&self.bucket, key, complete, self.request_timeout)?;
            // S3 may answer 200 and report a failure in the body; a 200 without an <Error> is a
            // completed upload (servers name its root element differently), and the size check
            // below verifies it.
            if answer.text().contains("<Error>") {
                return Err(StorageError::Unverified {
                    key: key.to_string(),
                    detail: crate::logging::peer_text(&answer.text(), 300),
                });
            }
            let head = exchange(&self.bucket, key, Command::HeadObject, self.request_timeout)?;
            let length = head
                .header("content-length")
                .and_then(|length| length.parse::<u64>().ok());
            match length {
                Some(length) if length == size => Ok(size),
                other => Err(StorageError::Unverified {
                    key: key.to_string(),
                    detail: format!("stored size {other:?}, local size {size}"),
                }),
            }
        })();
        let abort = Command::AbortMultipartUpload {
            upload_id: &upload.upload_id,
        };
        if result.is_err()
            && let Err(error) = exchange(&self.bucket, key, abort, self.request_timeout)
        {
            log::warn!("s3: aborting the multipart upload of {key}: {error}");
        }
        result
    }
}

fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
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
