//! The export manifest and the tables around it: per-tenant status, files about to be renamed
//! into place, the files themselves and their upload queue, the per-run metric rows; and the
//! commit that takes a batch's rows from the capture. Only this module writes them.

mod commit;
mod counts;
mod files;
mod reads;
mod staging;
mod uploads;

pub use commit::*;
pub use counts::*;
pub use files::*;
pub use reads::*;
pub use staging::*;
pub use uploads::*;
