//! `[jwt]`: how customer tokens are checked (and `orderflow token` signs them). One of three
//! verifiers: the HS256 `secret` (the default), the RSA or EC public key of `public_key_file`
//! (RS256, ES256: the algorithm follows the key), or the JSON Web Key Set of `jwks_file`
//! (keys picked by the token's `kid`). With a key file, only its keys verify tokens, and the
//! file is read again when it changes (every `reload_secs`), so keys rotate without a restart.

use super::ConfigError;
use super::sections::check;
use orderflow_ingest::Auth;
use orderflow_ingest::auth::{KeyFile, KeyFormat, KeySet};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The signing secret used when none is configured: fine on a laptop, warned about.
pub const DEV_SECRET: &str = "orderflow-dev-secret-change-me";

/// `[jwt]`: how customer tokens are signed and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 secret, at least 16 bytes; set it in production. Unused for verifying when a key
    /// file is set.
    pub secret: String,
    /// The `iss` every token must carry (an identity provider's URL); unset: not checked.
    pub issuer: Option<String>,
    /// The `aud` every token must carry; unset: not checked.
    pub audience: Option<String>,
    /// A PEM public key (RSA: RS256, EC P-256: ES256) that alone verifies tokens.
    pub public_key_file: Option<PathBuf>,
    /// A JSON Web Key Set whose keys alone verify tokens, chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// How often (seconds) the key file is checked for a change; 0: read once at start.
    pub reload_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: DEV_SECRET.into(),
            issuer: None,
            audience: None,
            public_key_file: None,
            jwks_file: None,
            reload_secs: 5,
        }
    }
}

impl JwtConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.secret.len() >= 16,
            "jwt.secret",
            "must be at least 16 bytes",
        )?;
        check(
            self.issuer.as_deref().is_none_or(|i| !i.trim().is_empty()),
            "jwt.issuer",
            "must not be empty (leave it unset to not check issuers)",
        )?;
        check(
            self.audience
                .as_deref()
                .is_none_or(|a| !a.trim().is_empty()),
            "jwt.audience",
            "must not be empty (leave it unset to not check audiences)",
        )?;
        check(
            given(&self.public_key_file).is_none() || given(&self.jwks_file).is_none(),
            "jwt.jwks_file",
            "set jwt.public_key_file or jwt.jwks_file, not both",
        )?;
        check(
            self.reload_secs <= 86_400,
            "jwt.reload_secs",
            "must be 0 to 86400 (0: read the key file once)",
        )?;
        // A key file that cannot be read or holds no usable key stops the start here.
        self.load().map(|_| ())
    }

    /// What `env = "production"` refuses: the built-in secret, when the secret verifies tokens.
    /// (Tokens without `exp` are refused in every environment.)
    pub(crate) fn validate_for_production(&self) -> Result<(), ConfigError> {
        check(
            !self.uses_dev_secret(),
            "jwt.secret",
            "the built-in development secret is refused with env = \"production\"; set \
             ORDERFLOW_JWT_SECRET, or verify with jwt.public_key_file or jwt.jwks_file",
        )
    }

    /// Whether tokens are verified with the built-in development secret.
    pub fn uses_dev_secret(&self) -> bool {
        self.secret == DEV_SECRET && self.key_file().is_none()
    }

    /// The key file that verifies tokens, if one is set, with its key (`jwt.jwks_file`).
    pub fn key_file(&self) -> Option<(&'static str, KeyFile)> {
        match (given(&self.public_key_file), given(&self.jwks_file)) {
            (_, Some(path)) => Some(("jwt.jwks_file", KeyFile::new(path, KeyFormat::Jwks))),
            (Some(path), None) => Some(("jwt.public_key_file", KeyFile::new(path, KeyFormat::Pem))),
            (None, None) => None,
        }
    }

    /// How often the key file is checked for a change; `None`: never.
    pub fn reload_every(&self) -> Option<Duration> {
        (self.reload_secs > 0).then(|| Duration::from_secs(self.reload_secs))
    }

    /// Token checks and minting as configured (minting only with the secret).
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        self.load().map(|(auth, _)| auth)
    }

    /// Token checks as configured, and the key file they were read from (to watch for
    /// rotation), if any.
    pub fn load(&self) -> Result<(Auth, Option<KeyFile>), ConfigError> {
        let (auth, file) = match self.key_file() {
            None => (Auth::new(self.secret.as_bytes()), None),
            Some((key, mut file)) => {
                let keys: KeySet = file.load().map_err(|source| ConfigError::KeyFile {
                    key,
                    path: file.path().to_owned(),
                    source,
                })?;
                (Auth::with_keys(keys), Some(file))
            }
        };
        let auth = auth.expecting(self.issuer.as_deref(), self.audience.as_deref());
        Ok((auth, file))
    }
}

/// A path that is set and not empty (`ORDERFLOW_JWT_JWKS_FILE=` unsets the key).
fn given(path: &Option<PathBuf>) -> Option<&PathBuf> {
    path.as_ref().filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use figment::Jail;

    /// The committed test keys (tests/fixtures/jwt/README.md).
    fn fixture(name: &str) -> String {
        format!(
            "{}/../tests/fixtures/jwt/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn load(jail: &mut Jail, vars: &[(&str, &str)]) -> Result<Config, String> {
        for (var, value) in vars {
            jail.set_env(var, value);
        }
        Config::load(None, &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn key_files_load_from_the_environment_and_replace_the_secret() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("ORDERFLOW_JWT_JWKS_FILE", &fixture("jwks-ab.json")),
                    ("ORDERFLOW_JWT_RELOAD_SECS", "2"),
                ],
            )
            .expect("valid");
            assert_eq!(c.jwt.reload_every(), Some(Duration::from_secs(2)));
            let (auth, file) = c.jwt.load().expect("loads");
            assert!(!auth.uses_secret() && file.is_some());
            assert!(!c.uses_dev_secret(), "the secret verifies nothing");
            // An empty value unsets a key file.
            let c = load(
                jail,
                &[
                    ("ORDERFLOW_JWT_JWKS_FILE", ""),
                    ("ORDERFLOW_JWT_PUBLIC_KEY_FILE", &fixture("ec-b.pub.pem")),
                ],
            )
            .expect("valid");
            assert_eq!(
                c.jwt.key_file().map(|(key, _)| key),
                Some("jwt.public_key_file")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[("ORDERFLOW_JWT_PUBLIC_KEY_FILE", &fixture("rsa-a.pub.pem"))],
            )
            .expect("valid");
            assert!(!c.jwt.auth().expect("loads").uses_secret());
            Ok(())
        });
    }

    #[test]
    fn a_bad_key_file_stops_the_start_naming_its_key() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "garbage.json",
                "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"s\", \"k\": \"c2VjcmV0\"}]}",
            )?;
            jail.create_file("public.pem", "not a key")?;
            for (var, value, says) in [
                (
                    "ORDERFLOW_JWT_JWKS_FILE",
                    "/no/such/jwks.json",
                    "/no/such/jwks.json",
                ),
                ("ORDERFLOW_JWT_JWKS_FILE", "garbage.json", "symmetric"),
                ("ORDERFLOW_JWT_PUBLIC_KEY_FILE", "public.pem", "PEM"),
                (
                    "ORDERFLOW_JWT_PUBLIC_KEY_FILE",
                    &fixture("rsa-a.pem"),
                    "private key",
                ),
            ] {
                let e = load(jail, &[(var, value)]).expect_err("refused");
                let key = var
                    .trim_start_matches("ORDERFLOW_")
                    .to_ascii_lowercase()
                    .replacen('_', ".", 1);
                assert!(e.contains(&key) && e.contains(says), "{var}={value}: {e}");
                jail.clear_env();
            }
            let e = load(
                jail,
                &[
                    ("ORDERFLOW_JWT_JWKS_FILE", &fixture("jwks-a.json")),
                    ("ORDERFLOW_JWT_PUBLIC_KEY_FILE", &fixture("rsa-a.pub.pem")),
                ],
            )
            .expect_err("refused");
            assert!(e.contains("not both"), "{e}");
            jail.clear_env();
            let e = load(jail, &[("ORDERFLOW_JWT_RELOAD_SECS", "100000")]).expect_err("refused");
            assert!(e.contains("jwt.reload_secs"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn production_takes_public_keys_without_a_secret() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("ORDERFLOW_ENV", "production"),
                    ("ORDERFLOW_JWT_JWKS_FILE", &fixture("jwks-a.json")),
                ],
            )
            .expect("the built-in secret verifies nothing here");
            assert!(!c.uses_dev_secret());
            jail.clear_env();
            let e = load(jail, &[("ORDERFLOW_ENV", "production")]).expect_err("refused");
            assert!(
                e.contains("jwt.secret") && e.contains("jwt.jwks_file"),
                "{e}"
            );
            Ok(())
        });
    }
}
