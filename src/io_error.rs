//! An I/O error together with what was being done, shared by every error type that touches
//! files, so each says "writing data/exports/...: No space left on device" the same way.

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct IoError {
    pub context: String,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// For `map_err`: wraps an I/O error with what was being done.
    pub fn during(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
        let context = context.into();
        move |source| IoError { context, source }
    }
}
