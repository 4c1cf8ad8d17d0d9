//! Uploads that never overwrite (SPEC section 9): each is conditional (`If-None-Match: *`), so
//! a fleet's sites, a clone not yet adopted or two boxes given one site id can never replace
//! each other's objects. A key that already holds an object is compared with the local file:
//! the same bytes are an upload done before (a retry, a run killed after the upload), other
//! bytes a conflict, left as they are.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use s3::command::{Command, Multipart};
use s3::serde_types::{CompleteMultipartUploadData, InitiateMultipartUploadResponse, Part};

use super::exchange::{Condition, exchange, exchange_if};
use super::{MULTIPART_THRESHOLD, Storage, StorageError, content_type};
use crate::io_error::IoError;

/// What an upload found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    /// The object's ETag: what a later replacement of it names (`If-Match`).
    pub etag: String,
    pub stored: Stored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The object was written and verified.
    Written,
    /// The key already held these very bytes (an upload done before); nothing was written.
    AlreadyThere,
}

/// What storage answers when a condition does not hold.
const PRECONDITION_FAILED: u16 = 412;

fn precondition_failed(error: &StorageError) -> bool {
    matches!(error, StorageError::Refused { status, .. } if *status == PRECONDITION_FAILED)
}

impl Storage {
    /// Uploads a local file to `key` unless the key holds an object, and verifies what storage
    /// received: the ETag of a single PUT is the MD5 of the body; for multipart uploads each
    /// part's ETag is checked and the object's final size. A key holding the same bytes is
    /// [`Stored::AlreadyThere`]; one holding other bytes is [`StorageError::Conflict`].
    pub fn upload(&self, local: &Path, key: &str) -> Result<Uploaded, StorageError> {
        let size = file_size(local)?;
        if size as usize > MULTIPART_THRESHOLD {
            // A large file already there (a retry) is compared before its parts go up again;
            // the condition on completing still guards against a writer in between.
            if self.etag(key)?.is_some() {
                return self.compare_with_stored(local, key, size);
            }
        }
        match self.put_file(local, key, Condition::Absent) {
            Err(error) if precondition_failed(&error) => self.compare_with_stored(local, key, size),
            result => result,
        }
    }

    /// Replaces the object at `key`, which must still be the one with ETag `etag` (a rewrite
    /// of edgecron's own file replaces its own object only), by the local file.
    pub fn replace(&self, local: &Path, key: &str, etag: &str) -> Result<Uploaded, StorageError> {
        self.put_file(local, key, Condition::Matches(etag))
            .map_err(|error| match error {
                error if precondition_failed(&error) => StorageError::Conflict {
                    key: key.to_string(),
                    detail: format!("it no longer holds the object {etag} to replace"),
                },
                error => error,
            })
    }

    /// The ETag of the object at `key`, if there is one.
    pub fn etag(&self, key: &str) -> Result<Option<String>, StorageError> {
        match exchange(&self.bucket, key, Command::HeadObject, self.request_timeout) {
            Ok(head) => Ok(Some(
                head.header("etag")
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            )),
            Err(StorageError::Refused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One PUT of the file (in parts when it is large), under `condition`, verified.
    fn put_file(
        &self,
        local: &Path,
        key: &str,
        condition: Condition<'_>,
    ) -> Result<Uploaded, StorageError> {
        let io = |context: &str| {
            let context = format!("{context} {}", local.display());
            move |source| StorageError::Io(IoError { context, source })
        };
        let mut file = File::open(local).map_err(io("opening"))?;
        let size = file.metadata().map_err(io("reading"))?.len();
        if size as usize > MULTIPART_THRESHOLD {
            return self.put_in_parts(&mut file, key, size, local, condition);
        }
        let mut content = Vec::with_capacity(size as usize);
        file.read_to_end(&mut content).map_err(io("reading"))?;
        let expected = format!("{:x}", md5::compute(&content));
        let put = Command::PutObject {
            content: &content,
            content_type: content_type(key),
            custom_headers: None,
            multipart: None,
        };
        let answer = exchange_if(&self.bucket, key, put, condition, self.request_timeout)?;
        let etag = answer.header("etag").map(|etag| etag.trim_matches('"'));
        match etag {
            Some(etag) if etag == expected => Ok(Uploaded {
                bytes: size,
                etag: expected,
                stored: Stored::Written,
            }),
            other => Err(StorageError::Unverified {
                key: key.to_string(),
                detail: format!("ETag {other:?}, expected MD5 {expected}"),
            }),
        }
    }

    fn put_in_parts(
        &self,
        file: &mut File,
        key: &str,
        size: u64,
        local: &Path,
        condition: Condition<'_>,
    ) -> Result<Uploaded, StorageError> {
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
            let mut of_parts = md5::Context::new();
            let mut chunk = vec![0u8; MULTIPART_THRESHOLD];
            for part_number in 1.. {
                let filled = read_full(file, &mut chunk)
                    .map_err(IoError::during(format!("reading {}", local.display())))?;
                if filled == 0 {
                    break;
                }
                let body = &chunk[..filled];
                let digest = md5::compute(body);
                of_parts.consume(digest.0);
                let expected = format!("{digest:x}");
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
            let etag = format!("{:x}-{}", of_parts.finalize(), parts.len());
            let complete = Command::CompleteMultipartUpload {
                upload_id: &upload.upload_id,
                data: CompleteMultipartUploadData { parts },
            };
            let answer = exchange_if(&self.bucket, key, complete, condition, self.request_timeout)?;
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
                Some(length) if length == size => Ok(Uploaded {
                    bytes: size,
                    etag,
                    stored: Stored::Written,
                }),
                other => Err(StorageError::Unverified {
                    key: key.to_string(),
                    detail: format!("stored size {other:?}, local size {size}"),
                }),
            }
        })();
        if result.is_err() {
            let abort = Command::AbortMultipartUpload {
                upload_id: &upload.upload_id,
            };
            if let Err(error) = exchange(&self.bucket, key, abort, self.request_timeout) {
                log::warn!("s3: aborting the multipart upload of {key}: {error}");
            }
        }
        result
    }

    /// The key holds an object: the same bytes as `local` (by its ETag, in the single or the
    /// multipart form, else by reading it back when only the form differs) or a conflict.
    fn compare_with_stored(
        &self,
        local: &Path,
        key: &str,
        size: u64,
    ) -> Result<Uploaded, StorageError> {
        let head = exchange(&self.bucket, key, Command::HeadObject, self.request_timeout)?;
        let etag = head
            .header("etag")
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let stored_size = head
            .header("content-length")
            .and_then(|length| length.parse::<u64>().ok());
        let digests = LocalDigests::of(local)?;
        let already_there = |etag: String| {
            log::info!("s3: {key} already holds this file's bytes; not uploaded again");
            Ok(Uploaded {
                bytes: size,
                etag,
                stored: Stored::AlreadyThere,
            })
        };
        if digests.names(&etag) {
            return already_there(etag);
        }
        let conflict = |detail: String| StorageError::Conflict {
            key: key.to_string(),
            detail,
        };
        if stored_size != Some(size) {
            return Err(conflict(format!(
                "it holds {} bytes (ETag {etag}), the local file {size}",
                stored_size.map_or_else(|| "an unknown number of".into(), |s| s.to_string())
            )));
        }
        // Same size, an ETag of another form (another part size, encryption): the bytes tell.
        let mut stored = md5::Context::new();
        super::exchange::download(
            &self.bucket,
            key,
            self.request_timeout,
            size + 1,
            &mut stored,
        )?;
        let stored = format!("{:x}", stored.finalize());
        if stored == digests.whole {
            return already_there(etag);
        }
        Err(conflict(format!(
            "it holds other bytes of the same size (MD5 {stored}, the local file {})",
            digests.whole
        )))
    }
}

fn file_size(local: &Path) -> Result<u64, StorageError> {
    std::fs::metadata(local)
        .map(|metadata| metadata.len())
        .map_err(|source| {
            StorageError::Io(IoError {
                context: format!("reading {}", local.display()),
                source,
            })
        })
}

/// A local file's MD5, and the ETag a multipart upload of it in parts of
/// `MULTIPART_THRESHOLD` gets (the MD5 of the parts' MD5s, then `-` and their number): the
/// ETags an object holding its bytes has when edgecron uploaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDigests {
    pub whole: String,
    pub multipart: String,
}

impl LocalDigests {
    /// Whether `etag` is one of the two.
    pub fn names(&self, etag: &str) -> bool {
        etag == self.whole || etag == self.multipart
    }

    pub fn of(local: &Path) -> Result<LocalDigests, StorageError> {
        let reading = || IoError::during(format!("reading {}", local.display()));
        let mut file = File::open(local).map_err(reading())?;
        let mut whole = md5::Context::new();
        let mut of_parts = md5::Context::new();
        let mut parts = 0;
        let mut chunk = vec![0u8; MULTIPART_THRESHOLD];
        loop {
            let filled = read_full(&mut file, &mut chunk).map_err(reading())?;
            if filled == 0 {
                break;
            }
            whole.consume(&chunk[..filled]);
            of_parts.consume(md5::compute(&chunk[..filled]).0);
            parts += 1;
        }
        Ok(LocalDigests {
            whole: format!("{:x}", whole.finalize()),
            multipart: format!("{:x}-{parts}", of_parts.finalize()),
        })
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
    use super::*;

    #[test]
    fn a_file_s_digests_are_its_md5_and_its_multipart_etag() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"hello\n").unwrap();
        let digests = LocalDigests::of(&small).unwrap();
        assert_eq!(digests.whole, "b1946ac92492d2347c6235b4d2611184");
        assert_eq!(
            digests.multipart,
            format!("{:x}-1", md5::compute(md5::compute(b"hello\n").0))
        );
        let large = dir.path().join("large");
        let content: Vec<u8> = (0..MULTIPART_THRESHOLD + 10).map(|i| i as u8).collect();
        std::fs::write(&large, &content).unwrap();
        let digests = LocalDigests::of(&large).unwrap();
        let (first, second) = content.split_at(MULTIPART_THRESHOLD);
        let parts = [md5::compute(first).0, md5::compute(second).0].concat();
        assert_eq!(digests.multipart, format!("{:x}-2", md5::compute(parts)));
        assert_eq!(digests.whole, format!("{:x}", md5::compute(&content)));
    }
}
