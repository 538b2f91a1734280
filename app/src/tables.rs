//! The catalog and the promotion codes: from the configured file, else from `./config/` when
//! the process runs in a checkout of the repository, else the demo tables built into the binary
//! — so `orderflow serve` works from any directory.

use crate::config::TableConfig;
use crate::error::AppError;
use orderflow_domain::{Catalog, Promotions};
use std::path::{Path, PathBuf};

/// The demo catalog (`config/catalog.json`), compiled in.
pub const DEMO_CATALOG: &str = include_str!("../../config/catalog.json");
/// The demo promotion codes (`config/promotions.json`), compiled in.
pub const DEMO_PROMOTIONS: &str = include_str!("../../config/promotions.json");

/// Where a table came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The demo table compiled into the binary.
    BuiltIn,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::BuiltIn => f.write_str("built-in demo"),
        }
    }
}

/// The file a table is read from: the configured one, else `config/<default_name>` if it
/// exists under the working directory; `None` means the built-in table.
fn locate(table: &TableConfig, default_name: &str) -> Option<PathBuf> {
    table.file.clone().or_else(|| {
        let local = Path::new("config").join(default_name);
        local.exists().then_some(local)
    })
}

/// The catalog and where it came from.
pub fn catalog(table: &TableConfig) -> Result<(Catalog, Source), AppError> {
    match locate(table, "catalog.json") {
        Some(path) => Ok((Catalog::load(&path)?, Source::File(path))),
        None => Ok((
            Catalog::parse(DEMO_CATALOG, "the built-in demo catalog")?,
            Source::BuiltIn,
        )),
    }
}

/// The promotion codes and where they came from.
pub fn promotions(table: &TableConfig) -> Result<(Promotions, Source), AppError> {
    match locate(table, "promotions.json") {
        Some(path) => Ok((Promotions::load(&path)?, Source::File(path))),
        None => Ok((
            Promotions::parse_from(DEMO_PROMOTIONS, "the built-in demo promotions")?,
            Source::BuiltIn,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_tables_parse() {
        let catalog = Catalog::parse(DEMO_CATALOG, "demo").expect("demo catalog");
        assert!(!catalog.items().is_empty());
        Promotions::parse(DEMO_PROMOTIONS).expect("demo promotions");
    }

    #[test]
    fn a_configured_file_that_is_missing_is_an_error() {
        let table = TableConfig {
            file: Some("/no/such/catalog.json".into()),
        };
        let e = catalog(&table).expect_err("missing").to_string();
        assert!(e.contains("/no/such/catalog.json"), "{e}");
    }
}
