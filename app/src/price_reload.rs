//! The `pricing-reload` chore: every `pricing.reload_secs` it reads the four pricing tables and,
//! when their text has changed (their version differs from the book in force), checks them and
//! swaps them in whole. Every process runs it, so split workers given the same files switch
//! together, without each being sent `POST /v1/admin/pricing/reload`. A changed table that
//! cannot be used is logged once and counted, and the tables in force stay.

use crate::supervisor::Chore;
use crate::tables::PriceTables;
use orderflow_domain::{PriceBook, SharedPriceBook};
use std::time::Duration;

/// The chore that swaps `book` when the files of `tables` change, checked `every` period.
pub fn reloader(book: SharedPriceBook, tables: PriceTables, every: Duration) -> Chore {
    let mut refused = None;
    Chore::new("pricing-reload", every, move || {
        reload_if_changed(&book, &tables, &mut refused);
        async { Ok(()) }
    })
}

/// Reads the tables into `book` if their text changed; true if they were swapped. `refused`
/// remembers the last text that could not be used, so it is reported once, not every period.
pub fn reload_if_changed(
    book: &SharedPriceBook,
    tables: &PriceTables,
    refused: &mut Option<String>,
) -> bool {
    let texts = match tables.read() {
        Ok(texts) => texts,
        Err(e) => {
            let why = e.to_string();
            if refused.as_deref() != Some(why.as_str()) {
                let _ = orderflow_ingest::pricing::install(book, Err(why.clone()));
                *refused = Some(why);
            }
            return false;
        }
    };
    let sources = texts.sources();
    let version = sources.version();
    let current = book.load_full();
    if version == current.version || refused.as_deref() == Some(version.as_str()) {
        return false;
    }
    let loaded = PriceBook::parse(&sources).map_err(|e| e.to_string());
    match orderflow_ingest::pricing::install(book, loaded) {
        Ok(_) => {
            *refused = None;
            true
        }
        Err(_) => {
            // Reported by `install`; not again until the text changes.
            *refused = Some(version);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn changed_files_are_swapped_in_and_a_bad_one_is_kept_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("promotions.json");
        std::fs::write(&path, r#"{"promotions":[]}"#).expect("write");
        let mut config = Config::default();
        config.promotions.file = Some(path.clone());
        let tables = PriceTables::new(&config);
        let book = tables.load().expect("tables").0.shared();
        let mut refused = None;
        assert!(
            !reload_if_changed(&book, &tables, &mut refused),
            "unchanged"
        );

        std::fs::write(
            &path,
            r#"{"promotions":[{"id":"a","percent_off_bps":100}]}"#,
        )
        .expect("write");
        assert!(reload_if_changed(&book, &tables, &mut refused), "swapped");
        assert_eq!(book.load().promotions.len(), 1);

        std::fs::write(&path, r#"{"promotions":[{"id":"a"}]}"#).expect("write");
        assert!(!reload_if_changed(&book, &tables, &mut refused), "kept out");
        assert!(refused.is_some());
        assert_eq!(book.load().promotions.len(), 1, "the tables in force stay");
        assert!(
            !reload_if_changed(&book, &tables, &mut refused),
            "reported once"
        );

        std::fs::remove_file(&path).expect("remove");
        assert!(
            !reload_if_changed(&book, &tables, &mut refused),
            "unreadable: kept"
        );
        assert_eq!(book.load().promotions.len(), 1);
    }
}
