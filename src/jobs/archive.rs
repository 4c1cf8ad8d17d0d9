//! Files jobs write under the data dir (NDJSON archives of rows that leave the store or the
//! SIEM path, rendered reports): written atomically and durably, and named deterministically
//! (an archive after its first row), so work redone after a crash replaces its own file
//! rather than adding a second.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::JobError;
use crate::config::Compression;

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
    std::fs::create_dir_all(dir).map_err(JobError::io(format!("creating {}", dir.display())))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&temporary)
        .map_err(JobError::io(format!("creating {}", temporary.display())))?;
    file.write_all(lines)
        .and_then(|()| file.sync_all())
        .map_err(JobError::io(format!("writing {}", temporary.display())))?;
    std::fs::rename(&temporary, &path)
        .map_err(JobError::io(format!("renaming {}", path.display())))?;
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(JobError::io(format!("fsync {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_keep_only_safe_characters() {
        assert_eq!(
            stem("2026-04-01T00:00:00.000Z", "../x y"),
            "2026-04-01T00_00_00_000Z-___x_y"
        );
    }
}
