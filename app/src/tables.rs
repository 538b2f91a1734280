//! The pricing tables (catalog, promotions, tax, shipping): each from its configured file,
//! else from `./config/` when the process runs in a checkout of the repository, else the demo
//! table built into the binary — so `orderflow serve` works from any directory.

use crate::config::{Config, TableConfig};
use orderflow_domain::pricing::{Source as Text, Sources};
use orderflow_domain::{PriceBook, TableError};
use std::path::{Path, PathBuf};

/// The demo catalog (`config/catalog.json`), compiled in.
pub const DEMO_CATALOG: &str = include_str!("../../config/catalog.json");
/// The demo promotions (`config/promotions.json`), compiled in.
pub const DEMO_PROMOTIONS: &str = include_str!("../../config/promotions.json");
/// The demo tax table (`config/tax.json`), compiled in.
pub const DEMO_TAX: &str = include_str!("../../config/tax.json");
/// The demo shipping table (`config/shipping.json`), compiled in.
pub const DEMO_SHIPPING: &str = include_str!("../../config/shipping.json");

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

/// One table's text, where it came from, and the name errors give it.
struct Loaded {
    text: String,
    source: Source,
    origin: String,
}

fn read(table: &TableConfig, name: &str, demo: &str) -> Result<Loaded, TableError> {
    match locate(table, &format!("{name}.json")) {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| TableError::Io {
                origin: origin.clone(),
                source,
            })?;
            Ok(Loaded {
                text,
                source: Source::File(path),
                origin,
            })
        }
        None => Ok(Loaded {
            text: demo.to_owned(),
            source: Source::BuiltIn,
            origin: format!("the built-in demo {name}"),
        }),
    }
}

/// Where the four pricing tables are read from; read again on every reload.
#[derive(Debug, Clone)]
pub struct PriceTables {
    catalog: TableConfig,
    promotions: TableConfig,
    tax: TableConfig,
    shipping: TableConfig,
}

/// Where each table of a [`PriceBook`] came from, for the log.
#[derive(Debug, Clone)]
pub struct Origins {
    /// `[catalog]`.
    pub catalog: Source,
    /// `[promotions]`.
    pub promotions: Source,
    /// `[tax]`.
    pub tax: Source,
    /// `[shipping]`.
    pub shipping: Source,
}

impl Origins {
    /// Whether any table is a built-in demo.
    pub fn any_demo(&self) -> bool {
        [&self.catalog, &self.promotions, &self.tax, &self.shipping]
            .iter()
            .any(|s| **s == Source::BuiltIn)
    }
}

impl PriceTables {
    /// The tables `config` names.
    pub fn new(config: &Config) -> Self {
        Self {
            catalog: config.catalog.clone(),
            promotions: config.promotions.clone(),
            tax: config.tax.clone(),
            shipping: config.shipping.clone(),
        }
    }

    /// Reads and checks the four tables; the error names the file and the entry.
    pub fn load(&self) -> Result<(PriceBook, Origins), TableError> {
        let texts = self.read()?;
        let book = PriceBook::parse(&texts.sources())?;
        Ok((book, texts.origins()))
    }

    /// Reads the four texts, without checking them.
    pub fn read(&self) -> Result<Texts, TableError> {
        Ok(Texts {
            catalog: read(&self.catalog, "catalog", DEMO_CATALOG)?,
            promotions: read(&self.promotions, "promotions", DEMO_PROMOTIONS)?,
            tax: read(&self.tax, "tax", DEMO_TAX)?,
            shipping: read(&self.shipping, "shipping", DEMO_SHIPPING)?,
        })
    }
}

/// The four tables as read, not yet checked.
pub struct Texts {
    catalog: Loaded,
    promotions: Loaded,
    tax: Loaded,
    shipping: Loaded,
}

impl Texts {
    /// The texts for [`PriceBook::parse`] (and their version, `sources().version()`).
    pub fn sources(&self) -> Sources<'_> {
        fn text(l: &Loaded) -> Text<'_> {
            Text {
                text: &l.text,
                origin: &l.origin,
            }
        }
        Sources {
            catalog: text(&self.catalog),
            promotions: text(&self.promotions),
            tax: text(&self.tax),
            shipping: text(&self.shipping),
        }
    }

    fn origins(self) -> Origins {
        Origins {
            catalog: self.catalog.source,
            promotions: self.promotions.source,
            tax: self.tax.source,
            shipping: self.shipping.source,
        }
    }
}

impl orderflow_ingest::pricing::Reload for PriceTables {
    fn load(&self) -> Result<PriceBook, TableError> {
        PriceTables::load(self).map(|(book, _)| book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_tables_parse() {
        let (book, origins) = PriceTables::new(&Config::default())
            .load()
            .expect("demo tables");
        assert!(!book.catalog.items().is_empty());
        assert!(!book.promotions.is_empty() && !book.tax.is_empty() && !book.shipping.is_empty());
        assert_eq!(book.version.len(), 12);
        // The tests run in the crate's directory, which has no config/.
        assert!(origins.any_demo());
    }

    #[test]
    fn a_configured_file_that_is_missing_is_an_error() {
        let mut config = Config::default();
        config.tax.file = Some("/no/such/tax.json".into());
        let e = PriceTables::new(&config)
            .load()
            .expect_err("missing")
            .to_string();
        assert!(e.contains("/no/such/tax.json"), "{e}");
    }
}
