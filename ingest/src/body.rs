//! Reading JSON request bodies with the API's error classes: 415, 413, 400.

use crate::Problem;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

/// Checks the content type and size, then parses the body as `T`.
///
/// 415 unless the content type is `application/json` (parameters allowed); 413 when the body
/// exceeds `limit`; 400 when it is not JSON or does not have the expected shape.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<(T, Bytes), Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(Problem::unsupported_media_type());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Problem::too_large(limit));
    }
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(limit)
        } else {
            Problem::malformed(format!("cannot read the body: {rejection}"))
        }
    })?;
    if bytes.len() > limit {
        return Err(Problem::too_large(limit));
    }
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "the body does not match the expected schema",
            _ => "the body is not valid JSON",
        };
        Problem::malformed(format!("{what}: {e}"))
    })?;
    Ok((value, bytes))
}
