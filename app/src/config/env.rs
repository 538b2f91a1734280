//! The environment layer: `ORDERFLOW_<SECTION>_<KEY>` variables as `section.key` paths, with
//! errors that name the variable, and the refusal of variables that name no setting.

use super::{ConfigError, SECTIONS, insert};
use figment::providers::Env;
use figment::value::{Dict, Value};

/// `ORDERFLOW_*` variables that are not settings: the config file's path, and the load tests'
/// choice of binary.
const NOT_SETTINGS: [&str; 2] = ["CONFIG", "BIN"];

/// The environment layer: figment's [`Env`], with errors that name the variable itself
/// (`ORDERFLOW_LOG_PARTITIONS`) rather than its key path.
pub(super) struct Environment(Env);

impl figment::Provider for Environment {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable")
            .interpolater(|_, path| format!("ORDERFLOW_{}", path.join("_").to_ascii_uppercase()))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        // figment's own `Env` guesses each value's type ("42" becomes a number, quotes are
        // stripped); a setting is taken as the operator wrote it.
        let mut dict = Dict::new();
        for (key, value) in self.0.iter() {
            insert(&mut dict, key.as_str(), Value::from(value));
        }
        Ok(figment::value::Map::from([(
            figment::Profile::Default,
            dict,
        )]))
    }
}

/// The section and key an `ORDERFLOW_*` variable sets, as a `section.key` path; `None` for a
/// variable that names no section.
fn key_path(var: &str) -> Option<String> {
    let key = var.to_ascii_lowercase();
    if key == "env" {
        return Some(key);
    }
    // The storefront teams' name for it, beside `ORDERFLOW_API_CORS_ORIGINS`.
    if key == "cors_origins" {
        return Some("api.cors_origins".to_owned());
    }
    SECTIONS.iter().find_map(|(section, main)| {
        if key == *section {
            main.map(|k| format!("{section}.{k}"))
        } else {
            key.strip_prefix(section)
                .and_then(|rest| rest.strip_prefix('_'))
                .filter(|rest| !rest.is_empty())
                .map(|rest| format!("{section}.{rest}"))
        }
    })
}

/// Refuses an `ORDERFLOW_*` variable that names no section, or whose value is not UTF-8:
/// silently ignoring it would run with a default the operator meant to change.
pub(super) fn check_variables(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<(), ConfigError> {
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (var, value) in vars {
        let var = var.to_string_lossy();
        let Some(rest) = var.strip_prefix("ORDERFLOW_") else {
            continue;
        };
        if value.to_str().is_none() {
            return Err(ConfigError::NotUtf8(var.into_owned()));
        }
        if NOT_SETTINGS.contains(&rest) {
            continue;
        }
        let Some(path) = key_path(rest) else {
            return Err(ConfigError::UnknownVariable(var.into_owned()));
        };
        // `ORDERFLOW_LOG` and `ORDERFLOW_LOG_URL` name one key: which would win is not defined.
        if let Some(other) = seen.insert(path.clone(), var.clone().into_owned()) {
            return Err(ConfigError::SameKeyTwice {
                key: path,
                first: other,
                second: var.into_owned(),
            });
        }
    }
    Ok(())
}

/// `ORDERFLOW_<SECTION>_<KEY>` variables as `section.key` paths.
pub(super) fn environment() -> Environment {
    Environment(
        Env::prefixed("ORDERFLOW_").filter_map(|key| key_path(key.as_str()).map(Into::into)),
    )
}
