//! Files jobs write under the data dir (NDJSON archives of rows that leave the store or the
//! SIEM path, rendered reports): written atomically and durably, and named deterministically
//! (an archive after its site, its first row and what it holds), so work redone after a crash
//! writes the same file and object again rather than adding a second.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::JobError;
use crate::config::Compression;
use crate::config::layout::ARCHIVE;

/// `archive/{table}/site={site}/{stem}-{digest}.ndjson[.gz|.zst]` for `lines`, relative to the
/// data dir (and the object key under the prefix). Under its site, as export files are, so a
/// fleet's archives never share a key; the digest of the lines, so an archive made again after
/// a crash is the same object (an upload that finds it counts as done), and one that holds
/// other rows (rows that turned old since) is a new object, never one that conflicts.
pub fn relative_path(
    table: &str,
    site: &str,
    stem: &str,
    lines: &[u8],
    compression: Compression,
) -> String {
    let digest = Sha256::digest(lines);
    let short: String = digest[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{ARCHIVE}/{table}/site={site}/{stem}-{short}.ndjson{}",
        compression.suffix()
    )
}

/// `lines` as an archive is stored: compressed as export files are (`EXPORT_COMPRESSION`,
/// its suffix added to the name, which the caller does with [`Compression::suffix`]).
pub fn encode(lines: &[u8], compression: Compression) -> Result<Vec<u8>, JobError> {
    crate::export::format::ndjson::compressed(lines, compression)
        .map_err(JobError::io("compressing an archive"))
}

/// A file-name-safe stem from the first row's `created_at` and `id`.
pub fn stem(created_at: &str, id: &str) -> String {
    format!("{created_at}-{id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `lines` to `relative` under `data_dir`: a temporary file, fsynced, renamed into
/// place, and the directory fsynced, so the archive is whole and survives a crash.
pub fn write(data_dir: &Path, relative: &str, lines: &[u8]) -> Result<(), JobError> {
    let path = data_dir.join(relative);
    let dir = path.parent().unwrap_or(data_dir);
    crate::durable::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&temporary)
        .map_err(JobError::io(format!("creating {}", temporary.display())))?;
    file.write_all(lines)
        .and_then(|()| file.sync_all())
        .map_err(JobError::io(format!("writing {}", temporary.display())))?;
    std::fs::rename(&temporary, &path)
        .map_err(JobError::io(format!("renaming {}", path.display())))?;
    Ok(crate::durable::sync_dir(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_named_by_site_first_row_and_content() {
        let path = |site, lines: &[u8]| {
            relative_path(
                "export_logs",
                site,
                "export_logs-s",
                lines,
                Compression::Gzip,
            )
        };
        let first = path("edge-1", b"{}\n");
        assert!(first.starts_with("archive/export_logs/site=edge-1/export_logs-s-"));
        assert!(first.ends_with(".ndjson.gz"), "{first}");
        assert_eq!(first, path("edge-1", b"{}\n"));
        assert_ne!(first, path("edge-1", b"{}\n{}\n"));
        assert_ne!(first, path("edge-2", b"{}\n"));
    }

    #[test]
    fn stems_keep_only_safe_characters() {
        assert_eq!(
            stem("2026-04-01T00:00:00.000Z", "../x y"),
            "2026-04-01T00_00_00_000Z-___x_y"
        );
    }
}
