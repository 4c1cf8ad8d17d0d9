//! S3-compatible object storage for export files: verified uploads (single PUT or multipart)
//! through rust-s3's blocking client.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::Part;
use s3::{Bucket, Region};

use crate::config::S3Settings;
use crate::io_error::IoError;

/// Files larger than this go up in parts of this size (S3's minimum part is 5 MiB).
pub const MULTIPART_THRESHOLD: usize = 8 * 1024 * 1024;
/// NDJSON, or NDJSON gzipped (`.gz`): stored as it is, so readers get the file itself.
fn content_type(key: &str) -> &'static str {
    if key.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/x-ndjson"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("s3: {}", storage_answer(.0))]
    S3(#[from] S3Error),
    #[error("s3 credentials: {0}")]
    Credentials(String),
    #[error("upload of {key} not verified: {detail}")]
    Unverified { key: String, detail: String },
}

/// A storage error as a log line may hold it: what the storage answered is its text, shortened
/// and with control characters escaped.
fn storage_answer(error: &S3Error) -> String {
    match error {
        S3Error::HttpFailWithBody(status, body) => {
            format!("HTTP {status}: {}", crate::logging::peer_text(body, 300))
        }
        other => crate::logging::peer_text(&other.to_string(), 300),
    }
}

impl StorageError {
    /// Whether the storage as a whole failed, rather than this one file: unreachable, failing
    /// (5xx), refusing these credentials (401, 403) or without the bucket. Then the run's
    /// remaining uploads are left for the next run, and no file accrues a backoff of its own,
    /// so the whole queue goes as soon as the storage is right again.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StorageError::S3(S3Error::HttpFailWithBody(status, body)) => {
                *status >= 500
                    || matches!(status, 401 | 403)
                    || (*status == 404 && body.contains("NoSuchBucket"))
            }
            StorageError::S3(S3Error::HttpFail) => false,
            StorageError::S3(_) => true,
            _ => false,
        }
    }
}

pub struct Storage {
    bucket: Box<Bucket>,
    prefix: String,
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
            None => Credentials::anonymous(),
        }
        .map_err(|error| StorageError::Credentials(error.to_string()))?;
        let mut bucket = Bucket::new(bucket_name, region, credentials)?;
        if settings.path_style {
            bucket = bucket.with_path_style();
        }
        bucket.set_request_timeout(Some(settings.request_timeout));
        Ok(Storage {
            bucket,
            prefix: settings.prefix.clone(),
        })
    }

    /// Deletes an object; deleting one that is already gone succeeds, as S3 answers.
    pub fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.bucket.delete_object(key)?;
        Ok(())
    }

    /// Writes the object at `key` into `out`, streamed as it arrives.
    pub fn download(
        &self,
        key: &str,
        out: &mut (impl std::io::Write + Send),
    ) -> Result<(), StorageError> {
        self.bucket.get_object_to_writer(key, out)?;
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
            let response =
                self.bucket
                    .put_object_with_content_type(key, &content, content_type(key))?;
            let expected = format!("{:x}", md5::compute(&content));
            let etag = response
                .headers()
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("etag"))
                .map(|(_, value)| value.trim_matches('"').to_string());
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
        let upload = self
            .bucket
            .initiate_multipart_upload(key, content_type(key))?;
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
                let part: Part = self.bucket.put_multipart_chunk(
                    body,
                    key,
                    part_number,
                    &upload.upload_id,
                    content_type(key),
                )?;
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
            match self
                .bucket
                .complete_multipart_upload(key, &upload.upload_id, parts)
            {
                Ok(_) => {}
                // Some S3-compatible servers name the answer's root element differently: a 200
                // without an <Error> is a completed upload, and the size check below verifies it.
                Err(S3Error::HttpFailWithBody(200, body)) if !body.contains("<Error>") => {}
                Err(error) => return Err(error.into()),
            }
            let (head, _) = self.bucket.head_object(key)?;
            match head.content_length {
                Some(length) if length as u64 == size => Ok(size),
                other => Err(StorageError::Unverified {
                    key: key.to_string(),
                    detail: format!("stored size {other:?}, local size {size}"),
                }),
            }
        })();
        if result.is_err()
            && let Err(error) = self.bucket.abort_upload(key, &upload.upload_id)
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
