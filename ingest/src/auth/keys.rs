//! The keys tokens are verified with: one HS256 secret, one RSA or EC public key from a PEM
//! file, or a JSON Web Key Set whose keys are picked by the token's `kid`. A [`KeyFile`] reads
//! a PEM or JWKS file and tells when it has changed, so a running process can swap its keys.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a key or key set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds neither an RSA nor an EC public key.
    #[error("not an RSA or EC (P-256) public key in PEM (SubjectPublicKeyInfo): {0}")]
    Pem(#[source] jsonwebtoken::errors::Error),
    /// A private key where its public half belongs.
    #[error("this is a private key; configure its public half (openssl pkey -in KEY -pubout)")]
    PrivateKey,
    /// The PEM holds neither an RSA nor an EC private key.
    #[error("not an RSA or EC (P-256) private key in PEM (PKCS#8, or PKCS#1 for RSA): {0}")]
    PrivatePem(#[source] jsonwebtoken::errors::Error),
    /// The JWKS is not a JSON Web Key Set.
    #[error("not a JSON Web Key Set ({{\"keys\": [...]}}): {0}")]
    Json(#[source] serde_json::Error),
    /// The JWKS holds no key that verifies signatures.
    #[error("the key set holds no keys that verify signatures")]
    Empty,
    /// A key of the JWKS has no `kid`, so no token could name it.
    #[error("key {index} of the key set has no \"kid\"")]
    NoKeyId {
        /// Its place in `keys`, from 0.
        index: usize,
    },
    /// Two keys of the JWKS share a `kid`.
    #[error("two keys of the key set have kid {0:?}")]
    DuplicateKeyId(String),
    /// A key is of a type or algorithm tokens are not verified with here.
    #[error("key {kid:?}: {why}")]
    Unsupported {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        why: String,
    },
    /// A key's parameters are not a usable public key.
    #[error("key {kid:?} is not a usable public key: {source}")]
    BadKey {
        /// The key's id.
        kid: String,
        /// Why.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// One verifying key and the one algorithm tokens signed with it must name.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

/// How a token's key is found.
#[derive(Clone)]
enum Lookup {
    /// One key for every token, whatever its `kid` (the secret, a PEM file's key).
    One(VerifyingKey),
    /// The key the token's `kid` names (a JWKS).
    ByKid(HashMap<String, VerifyingKey>),
}

/// The keys tokens are verified with.
#[derive(Clone)]
pub struct KeySet {
    lookup: Lookup,
}

/// Why no key of the set can check a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoKey {
    /// The set is a JWKS and the token names no key.
    #[error("the token has no key id (kid); tokens must name one of the configured keys")]
    MissingKeyId,
    /// The set has no key with the token's `kid`.
    #[error("the token's key id {0:?} is not one of the configured keys")]
    UnknownKeyId(String),
}

impl KeySet {
    /// Verifies HS256 tokens with `secret`.
    pub fn secret(secret: &[u8]) -> Self {
        Self {
            lookup: Lookup::One(VerifyingKey {
                key: DecodingKey::from_secret(secret),
                algorithm: Algorithm::HS256,
            }),
        }
    }

    /// Verifies tokens with the public key in `pem`: RS256 for an RSA key, ES256 for an EC
    /// P-256 key (the algorithm follows the key, so a token naming another one is refused).
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        // jsonwebtoken reads an RSA private key as a public one; it would then verify nothing.
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(KeyError::PrivateKey);
        }
        let key = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => VerifyingKey {
                key,
                algorithm: Algorithm::RS256,
            },
            Err(_) => VerifyingKey {
                key: DecodingKey::from_ec_pem(pem).map_err(KeyError::Pem)?,
                algorithm: Algorithm::ES256,
            },
        };
        probe("the PEM key", &key)?;
        Ok(Self {
            lookup: Lookup::One(key),
        })
    }

    /// Verifies tokens with the key of a JSON Web Key Set that their `kid` names. RSA keys
    /// verify RS256 (or the RSA algorithm their `alg` names), EC keys ES256 (P-256) or ES384
    /// (P-384); symmetric (`oct`) keys are refused, so a public key set never turns into
    /// shared secrets.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(KeyError::Json)?;
        if set.keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut keys = HashMap::with_capacity(set.keys.len());
        for (index, jwk) in set.keys.iter().enumerate() {
            if !verifies_signatures(jwk) {
                // An identity provider's set may also publish encryption keys: not ours to use,
                // and never to be taken for a signing key.
                continue;
            }
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or(KeyError::NoKeyId { index })?;
            let key = from_jwk(&kid, jwk)?;
            probe(&kid, &key)?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(KeyError::DuplicateKeyId(kid));
            }
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self {
            lookup: Lookup::ByKid(keys),
        })
    }

    /// Whether tokens are checked with a shared secret (HS256) rather than public keys.
    pub fn is_secret(&self) -> bool {
        matches!(&self.lookup, Lookup::One(k) if k.key.family() == AlgorithmFamily::Hmac)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        match &self.lookup {
            Lookup::One(_) => 1,
            Lookup::ByKid(keys) => keys.len(),
        }
    }

    /// Whether the set holds no key (never true of a set that was built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key ids of a JWKS, sorted (empty for a secret or a PEM key), for logs.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = match &self.lookup {
            Lookup::One(_) => Vec::new(),
            Lookup::ByKid(keys) => keys.keys().map(String::as_str).collect(),
        };
        ids.sort_unstable();
        ids
    }

    /// The algorithms the set's keys verify, each once.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algorithms = Vec::new();
        let mut add = |key: &VerifyingKey| {
            if !algorithms.contains(&key.algorithm) {
                algorithms.push(key.algorithm);
            }
        };
        match &self.lookup {
            Lookup::One(key) => add(key),
            Lookup::ByKid(keys) => keys.values().for_each(add),
        }
        algorithms
    }

    /// The key that checks a token whose header names `kid`.
    pub(crate) fn find(&self, kid: Option<&str>) -> Result<&VerifyingKey, NoKey> {
        match (&self.lookup, kid) {
            (Lookup::One(key), _) => Ok(key),
            (Lookup::ByKid(_), None) => Err(NoKey::MissingKeyId),
            (Lookup::ByKid(keys), Some(kid)) => keys
                .get(kid)
                .ok_or_else(|| NoKey::UnknownKeyId(kid.chars().take(64).collect())),
        }
    }
}

/// Whether a JWK may check signatures: not one marked for encryption (`use: "enc"`), nor one
/// whose `key_ops` leave out `verify`.
fn verifies_signatures(jwk: &Jwk) -> bool {
    let for_encryption = matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
    let verify_allowed = jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    !for_encryption && verify_allowed
}

/// The verifying key and algorithm of one JWK.
fn from_jwk(kid: &str, jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
    let unsupported = |why: String| KeyError::Unsupported {
        kid: kid.to_owned(),
        why,
    };
    let named = jwk.common.key_algorithm;
    let algorithm = match (&jwk.algorithm, named) {
        (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        (
            AlgorithmParameters::RSA(_),
            Some(
                alg @ (KeyAlgorithm::RS256
                | KeyAlgorithm::RS384
                | KeyAlgorithm::RS512
                | KeyAlgorithm::PS256
                | KeyAlgorithm::PS384
                | KeyAlgorithm::PS512),
            ),
        ) => Algorithm::try_from(alg).map_err(|source| KeyError::BadKey {
            kid: kid.to_owned(),
            source,
        })?,
        (AlgorithmParameters::EllipticCurve(ec), alg) => {
            let algorithm = match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                ref other => return Err(unsupported(format!("curve {other:?} is not supported"))),
            };
            if alg.is_some_and(|a| a != KeyAlgorithm::from(algorithm)) {
                return Err(unsupported(format!(
                    "alg {alg:?} does not fit curve {:?} (use {algorithm:?})",
                    ec.curve
                )));
            }
            algorithm
        }
        (AlgorithmParameters::RSA(_), Some(alg)) => {
            return Err(unsupported(format!("alg {alg} is not an RSA signature")));
        }
        (AlgorithmParameters::OctetKey(_), _) => {
            return Err(unsupported(
                "symmetric (oct) keys are refused; configure a shared secret as jwt.secret".into(),
            ));
        }
        _ => return Err(unsupported("only RSA and EC keys are supported".into())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|source| KeyError::BadKey {
        kid: kid.to_owned(),
        source,
    })?;
    Ok(VerifyingKey { key, algorithm })
}

/// Refuses a key its verifier cannot be built from (an EC point not on its curve), so a bad
/// key fails at start or at reload rather than on every token.
fn probe(kid: &str, key: &VerifyingKey) -> Result<(), KeyError> {
    jsonwebtoken::crypto::verify("AA", b"probe", &key.key, key.algorithm)
        .map(|_| ())
        .map_err(|source| KeyError::BadKey {
            kid: kid.to_owned(),
            source,
        })
}

/// The signing key in `pem` (a private key) and its algorithm: RS256 for RSA, ES256 for EC
/// P-256, as [`KeySet::from_pem`] verifies them.
pub fn signing_key(pem: &[u8]) -> Result<(EncodingKey, Algorithm), KeyError> {
    let (key, algorithm) = match EncodingKey::from_rsa_pem(pem) {
        Ok(key) => (key, Algorithm::RS256),
        Err(_) => (
            EncodingKey::from_ec_pem(pem).map_err(KeyError::PrivatePem)?,
            Algorithm::ES256,
        ),
    };
    // A public key reads as an RSA key too; only signing tells it is not a private one.
    jsonwebtoken::crypto::sign(b"probe", &key, algorithm).map_err(KeyError::PrivatePem)?;
    Ok((key, algorithm))
}

/// What a key file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// One RSA or EC public key, PEM.
    Pem,
    /// A JSON Web Key Set.
    Jwks,
}

/// A key file, with what it looked like when it was last read.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    format: KeyFormat,
    /// Modification time and length when last read (`Some(None)`: it could not be read); a
    /// change in either means a new file.
    seen: Option<Option<Stamp>>,
}

impl KeyFile {
    /// The file at `path`, holding `format`.
    pub fn new(path: impl Into<PathBuf>, format: KeyFormat) -> Self {
        Self {
            path: path.into(),
            format,
            seen: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file. What the file looked like is remembered even when it does
    /// not parse, so a bad file is reported once, not at every check.
    pub fn load(&mut self) -> Result<KeySet, KeyError> {
        // The stamp is taken before reading: a write after it shows as a change next time.
        self.seen = Some(stamp(&self.path).ok());
        let bytes = std::fs::read(&self.path).map_err(|source| KeyError::Read {
            path: self.path.clone(),
            source,
        })?;
        match self.format {
            KeyFormat::Pem => KeySet::from_pem(&bytes),
            KeyFormat::Jwks => KeySet::from_jwks(&bytes),
        }
    }

    /// Whether the file has changed (or become unreadable) since it was last read.
    pub fn changed(&self) -> bool {
        self.seen != Some(stamp(&self.path).ok())
    }
}

/// A file's modification time and length.
type Stamp = (Option<SystemTime>, u64);

/// The [`Stamp`] of the file at `path`.
fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}
