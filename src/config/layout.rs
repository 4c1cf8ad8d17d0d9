//! The data dir's layout, declared once: what edgecron keeps under it, and the directories
//! whose files a row may name (`ATTACHMENTS_DIR`, `UPLOADS_DIR`, `APP_EXPORTS_DIR`). A row may
//! name a file only inside its own table's directory (an allow-list: a tree edgecron adds later
//! is safe by construction), and no such directory may hold, or lie inside, anything of
//! edgecron's own.

use std::path::{Component, Path, PathBuf};

use super::variables::{APP_EXPORTS_DIR, ATTACHMENTS_DIR, UPLOADS_DIR, Variable};
use super::{ConfigError, Environment};

/// Export files (`export-interactions`).
pub const EXPORTS: &str = "exports";
/// Archived rows (`export-log-cleanup`, `siem-ship`'s rows too old for the intake).
pub const ARCHIVE: &str = "archive";
/// Report files (`cron-tick`).
pub const REPORTS: &str = "reports";
/// Copies the shipped backup timer makes (`edgecron backup`).
pub const BACKUPS: &str = "backups";
/// Export files being written, before they are renamed into place.
pub const STAGING: &str = ".export-staging";
/// Export files rewritten by an erasure, before they are renamed over the old ones.
pub const REWRITES: &str = ".export-rewrites";
/// The generated trigger secret.
pub const SECRET: &str = "cron-secret";

/// Trees under the data dir that only edgecron (or its units) writes.
pub const OWN_TREES: [&str; 6] = [EXPORTS, ARCHIVE, REPORTS, BACKUPS, STAGING, REWRITES];
/// Files under the data dir that are edgecron's own, besides the store.
pub const OWN_FILES: [&str; 1] = [SECRET];
/// What SQLite keeps beside the store file.
pub const STORE_SUFFIXES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// A table whose rows name files a job deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// `ai_attachments.blob_path` (`dsar-purge`).
    Attachments,
    /// `temp_uploads` (`maintenance`).
    Uploads,
    /// `export_logs.file_path` (`export-file-cleanup`).
    AppExports,
}

impl NamedBy {
    const ALL: [NamedBy; 3] = [NamedBy::Attachments, NamedBy::Uploads, NamedBy::AppExports];

    fn declared(self) -> &'static Variable {
        match self {
            NamedBy::Attachments => &ATTACHMENTS_DIR,
            NamedBy::Uploads => &UPLOADS_DIR,
            NamedBy::AppExports => &APP_EXPORTS_DIR,
        }
    }

    pub fn variable(self) -> &'static str {
        self.declared().name
    }

    fn default_dir(self) -> &'static str {
        self.declared().unset_value().unwrap_or_default()
    }
}

/// The directory of each table that names files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFileDirs {
    dirs: [PathBuf; 3],
}

impl NamedFileDirs {
    pub fn dir(&self, owner: NamedBy) -> &Path {
        &self.dirs[owner as usize]
    }

    /// The default directories, unchecked: the stand-in while configuration problems are
    /// collected (a configuration with a problem is never used).
    pub fn unchecked_defaults(data_dir: &Path) -> NamedFileDirs {
        NamedFileDirs {
            dirs: NamedBy::ALL.map(|owner| lexical(&data_dir.join(owner.default_dir()))),
        }
    }

    /// Reads the three variables: each a directory relative to the data dir unless absolute,
    /// apart from edgecron's own files and trees and from `GITOPS_DIR`.
    pub(super) fn parse(
        env: &Environment,
        data_dir: &Path,
        db_path: &Path,
        gitops_dir: Option<&Path>,
    ) -> Result<NamedFileDirs, ConfigError> {
        let mut own: Vec<PathBuf> = OWN_TREES
            .iter()
            .chain(&OWN_FILES)
            .map(|name| lexical(&data_dir.join(name)))
            .collect();
        own.extend(STORE_SUFFIXES.iter().map(|suffix| {
            let mut path = db_path.as_os_str().to_owned();
            path.push(suffix);
            lexical(Path::new(&path))
        }));
        own.extend(gitops_dir.map(lexical));
        let data_dir = lexical(data_dir);
        let mut dirs = Vec::new();
        for owner in NamedBy::ALL {
            let text = env.text_or_default(owner.declared());
            let given = Path::new(text);
            if given.components().any(|part| part == Component::ParentDir) {
                return Err(ConfigError(format!(
                    "{}: {text:?} may not contain `..`",
                    owner.variable()
                )));
            }
            let dir = lexical(&data_dir.join(given));
            let clash = own
                .iter()
                .find(|own| dir.starts_with(own) || own.starts_with(&dir));
            if dir == data_dir || clash.is_some() {
                return Err(ConfigError(format!(
                    "{}: {text:?} would let rows name edgecron's own files ({}); give a directory of its own",
                    owner.variable(),
                    clash.map_or_else(
                        || data_dir.display().to_string(),
                        |own| own.display().to_string()
                    )
                )));
            }
            dirs.push(dir);
        }
        let dirs = dirs
            .try_into()
            .map_err(|_| ConfigError("three named-file directories".into()))?;
        Ok(NamedFileDirs { dirs })
    }
}

/// The path with `.` components dropped (no `..` is left to resolve: callers refuse it).
pub fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter(|part| *part != Component::CurDir)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<NamedFileDirs, ConfigError> {
        let vars = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()));
        NamedFileDirs::parse(
            &Environment::new(vars),
            Path::new("./data"),
            Path::new("./data/edgecron.db"),
            Some(Path::new("/etc/edgecron/gitops")),
        )
    }

    #[test]
    fn each_table_has_a_directory_of_its_own_under_the_data_dir_by_default() {
        let dirs = parse(&[("UPLOADS_DIR", "/srv/uploads")]).unwrap();
        assert_eq!(dirs.dir(NamedBy::Attachments), Path::new("data/blobs"));
        assert_eq!(dirs.dir(NamedBy::Uploads), Path::new("/srv/uploads"));
        assert_eq!(dirs.dir(NamedBy::AppExports), Path::new("data/downloads"));
    }

    #[test]
    fn a_directory_holding_or_inside_edgecron_s_own_is_refused() {
        for (variable, value) in [
            ("ATTACHMENTS_DIR", "."),
            ("ATTACHMENTS_DIR", "exports"),
            ("UPLOADS_DIR", "backups/old"),
            ("APP_EXPORTS_DIR", "../elsewhere"),
            ("UPLOADS_DIR", "/etc/edgecron"),
            ("ATTACHMENTS_DIR", "edgecron.db-wal"),
        ] {
            let refused = parse(&[(variable, value)]).unwrap_err().0;
            assert!(refused.starts_with(variable), "{value}: {refused}");
        }
    }
}
