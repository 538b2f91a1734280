//! RFC 9457 problem details: every error the API returns.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every problem answer (RFC 9457), as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Problem)]
#[schema(example = json!({"type": "/problems/invalid-request", "title": "Invalid request",
    "status": 422, "detail": "the checkout has 1 problem(s)",
    "errors": ["lines: at least one line is required"]}))]
pub struct ProblemBody {
    /// `/problems/{slug}`, stable per kind of error: `malformed-request`, `unauthorized`,
    /// `forbidden`, `not-found`, `method-not-allowed`, `idempotency-key-in-progress`,
    /// `payload-too-large`, `unsupported-media-type`, `invalid-request`,
    /// `idempotency-key-reused`, `rate-limited`, `unavailable`, `overloaded`, `internal`,
    /// `order-not-cancellable`, `order-not-refundable`, `refund-exceeds-capture`.
    #[serde(rename = "type")]
    #[schema(pattern = "^/problems/[a-z-]+$")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What exactly went wrong with this request.
    pub detail: String,
    /// One entry per invalid field, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// An API error as `application/problem+json`, with a stable `type` per kind of error.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug; the `type` is `/problems/{slug}`.
    pub slug: &'static str,
    /// Short summary of the kind of problem.
    pub title: &'static str,
    /// What exactly went wrong with this request.
    pub detail: String,
    /// Field-level problems, if any.
    pub errors: Vec<String>,
    /// Seconds after which a retry may succeed (sets `Retry-After`).
    pub retry_after: Option<u32>,
}

impl Problem {
    fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 400: the body or a parameter cannot be read.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    /// 401: no valid token.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    /// 403: the token lacks a scope.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    /// 404: no such resource (or not the caller's).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not take that method",
        )
    }

    /// 409: the same idempotency key is still being processed.
    pub fn in_progress() -> Self {
        let mut p = Self::new(
            StatusCode::CONFLICT,
            "idempotency-key-in-progress",
            "Request in progress",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        );
        p.retry_after = Some(1);
        p
    }

    /// 409: the order is past the point where it can be cancelled; `status` names where it is.
    pub fn not_cancellable(status: &str) -> Self {
        let hint = if status == "rejected" {
            ""
        } else {
            "; a shipped order is refunded instead"
        };
        Self::new(
            StatusCode::CONFLICT,
            "order-not-cancellable",
            "Order cannot be cancelled",
            format!("the order is {status}{hint}"),
        )
    }

    /// 409: nothing was captured for the order, so there is nothing to refund.
    pub fn not_refundable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "order-not-refundable",
            "Order cannot be refunded",
            detail,
        )
    }

    /// 422: the refunds would add up to more than the order's capture.
    pub fn refund_exceeds_capture(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refund-exceeds-capture",
            "Refund exceeds capture",
            detail,
        )
    }

    /// 413: the body is larger than allowed.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the body must be at most {limit} bytes"),
        )
    }

    /// 415: not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }

    /// 422: readable, but the values are unacceptable.
    pub fn invalid(detail: impl Into<String>, errors: Vec<String>) -> Self {
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        );
        p.errors = errors;
        p
    }

    /// 422: an idempotency key reused with another body.
    pub fn key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request body",
        )
    }

    /// 429: the caller is over its request budget.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let seconds = u32::try_from(wait.as_millis().div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1);
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many checkouts",
            format!("this customer posts checkouts faster than allowed; retry in {seconds} s"),
        );
        p.retry_after = Some(seconds);
        p
    }

    /// 429: one client address sends requests faster than its budget.
    pub fn client_rate_limited(wait: std::time::Duration) -> Self {
        let mut p = Self::rate_limited(wait);
        p.title = "Too many requests";
        p.detail = format!(
            "this client address sends requests faster than allowed; retry in {} s",
            p.retry_after.unwrap_or(1)
        );
        p
    }

    /// 503: the pipeline is too far behind to take more checkouts now; they would only wait.
    pub fn overloaded() -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "too many checkouts are waiting to be processed; retry in a few seconds",
        );
        p.retry_after = Some(2);
        p
    }

    /// 503: a backend cannot take the request now.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        p.retry_after = Some(1);
        p
    }

    /// 500: a bug or an unexpected backend answer; details go to the log, not the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the error was logged",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: format!("/problems/{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        // Strings and numbers only: serializing cannot fail.
        let body = serde_json::to_string(&body).unwrap_or_default();
        metrics::counter!("orderflow_http_problems_total", "type" => self.slug).increment(1);
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
