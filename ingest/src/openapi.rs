//! The OpenAPI 3.1 document, generated from the code with utoipa and served at `/openapi.json`.
//!
//! Each handler carries its `#[utoipa::path]` (method, path, parameters, bodies, answers), and
//! the types it reads and answers derive `ToSchema`. [`api_routes`] registers those handlers
//! with axum through `utoipa-axum`, so a route and its description come from one line and
//! cannot drift. Problems are RFC 9457 answers, one response component per status
//! ([`BadRequest`] … [`Unavailable`]), listed by each handler for the errors it can give.

use crate::problem::ProblemBody;
use crate::{
    AppState, admin, cancel, catalog, checkout, ops, orders, pricing, refunds, webhooks, ws,
};
use orderflow_domain::OrderId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The name of the bearer JWT security scheme.
pub const BEARER: &str = "bearer";
/// The name of the scheme that carries the token in the `access_token` query parameter
/// (WebSocket clients in browsers cannot set headers).
pub const ACCESS_TOKEN: &str = "access_token";

/// The API's routes with their descriptions: what `app` serves behind the in-flight cap.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout::create))
        .routes(routes!(pricing::quote))
        .routes(routes!(orders::list_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(ws::follow))
        .routes(routes!(catalog::list))
        .routes(routes!(admin::get_stock, admin::put_stock))
        .routes(routes!(admin::audit))
        .routes(routes!(pricing::current))
        .routes(routes!(pricing::reload))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(cancel::cancel_order))
        .routes(routes!(refunds::create_refund))
}

/// The whole document: the API's routes, the operational ones and `/openapi.json` itself.
pub fn document() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(api_routes())
        .merge(ops::documented_routes())
        .routes(routes!(ops::openapi))
        .into_openapi()
}

/// [`document`] as JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document().to_pretty_json().unwrap_or_else(|e| {
            // Only a bug in a schema could get here; the tests read the document.
            tracing::error!(error = %e, "Cannot serialize the OpenAPI document");
            String::from("{}")
        })
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow API",
        description = "Streaming checkout pipeline. Errors are RFC 9457 `application/problem+json` \
            with a stable `type` (`/problems/{slug}`). Tokens are JWTs with `sub` (the customer id) \
            and space-separated `scope` (`checkout`, `orders:read`, `admin`). Every API route \
            (not the health, readiness, metrics and document routes) may answer 503 with \
            `Retry-After` when too many requests are in flight, and 429 with `Retry-After` when \
            the client address is over its budget."
    ),
    components(schemas(ProblemBody)),
    modifiers(&Components)
)]
/// The document's frame: what no handler says (title, description, shared components).
struct ApiDoc;

/// Adds the security schemes and the problem responses to the components.
struct Components;

impl Modify for Components {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                ACCESS_TOKEN,
                "The bearer token as a query parameter, for WebSocket clients that cannot set \
                 headers; `Authorization` wins when both are sent",
            ))),
        );
        for answer in PROBLEM_ANSWERS {
            components
                .responses
                .insert(answer.name.to_owned(), answer.response().into());
        }
    }
}

/// A problem answer with one status: the response component every handler that can give it
/// refers to.
struct ProblemAnswer {
    name: &'static str,
    description: &'static str,
    /// Response headers: name and description.
    headers: &'static [(&'static str, &'static str)],
}

/// What `Retry-After` says on a problem.
const RETRY_AFTER: (&str, &str) = ("Retry-After", "Seconds after which a retry may succeed");

impl ProblemAnswer {
    fn response(&self) -> Response {
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ProblemBody::name())))
                    .build(),
            );
        for (name, description) in self.headers {
            let schema = match *name {
                "Retry-After" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
                _ => ObjectBuilder::new().schema_type(Type::String),
            };
            response = response.header(
                *name,
                HeaderBuilder::new()
                    .schema(Some(schema))
                    .description(Some(*description))
                    .build(),
            );
        }
        response.build()
    }
}

/// Declares each problem answer: a unit type a handler lists in `responses(...)`, and its
/// entry in [`PROBLEM_ANSWERS`].
macro_rules! problem_answers {
    ($($name:ident = $status:literal, $description:literal, [$($header:expr),*];)*) => {
        $(
            #[doc = concat!("Status ", stringify!($status), ": ", $description, ".")]
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    let answer = Ref::from_response_name(stringify!($name));
                    BTreeMap::from([(stringify!($status).to_owned(), answer.into())])
                }
            }
        )*

        /// Every problem answer, registered as response components.
        const PROBLEM_ANSWERS: &[ProblemAnswer] = &[$(ProblemAnswer {
            name: stringify!($name),
            description: $description,
            headers: &[$($header),*],
        }),*];
    };
}

problem_answers! {
    BadRequest = 400, "`/problems/malformed-request`: the body is not JSON of the expected \
        shape, or a parameter or header cannot be read", [];
    Unauthorized = 401, "`/problems/unauthorized`: no token, or one that is malformed, \
        expired, not yet valid or not signed with the API's key",
        [("WWW-Authenticate", "`Bearer`")];
    Forbidden = 403, "`/problems/forbidden`: the token lacks the scope this route needs", [];
    NotFound = 404, "`/problems/not-found`: no such resource, or not the caller's", [];
    Conflict = 409, "`/problems/idempotency-key-in-progress`: a request with this \
        `Idempotency-Key` is still being processed", [RETRY_AFTER];
    PayloadTooLarge = 413, "`/problems/payload-too-large`: the body is larger than \
        `api.max_body_bytes`", [];
    UnsupportedMediaType = 415, "`/problems/unsupported-media-type`: the body is not sent as \
        `application/json`", [];
    Unprocessable = 422, "`/problems/invalid-request`: readable, but some values are \
        unacceptable (`errors` names each), or `/problems/idempotency-key-reused`: this \
        `Idempotency-Key` came with another body", [];
    OrderConflict = 409, "`/problems/order-not-cancellable`: the order shipped, completed or \
        was rejected (the detail names which; a shipped order is refunded instead), or \
        `/problems/order-not-refundable`: nothing was captured for the order", [];
    RefundUnprocessable = 422, "`/problems/invalid-request`: some values are unacceptable \
        (`errors` names each); `/problems/idempotency-key-reused`: this `Idempotency-Key` came \
        with another amount or reason; `/problems/refund-exceeds-capture`: the order's refunds \
        would add up to more than its capture", [];
    TooManyRequests = 429, "`/problems/rate-limited`: the client address (any API request) \
        or the customer (checkouts) is over its budget", [RETRY_AFTER];
    Unavailable = 503, "`/problems/unavailable`: a backend cannot take the request now, or \
        too many requests are in flight; `/problems/overloaded`: the pipeline is too far \
        behind to take more checkouts", [RETRY_AFTER];
}

/// The answers the edge may give on every API route, whatever the handler: the client
/// address's rate limit (429, [`crate::limits::per_client`]) and the in-flight cap (503,
/// [`crate::edge::in_flight`]).
pub struct Edge;

impl IntoResponses for Edge {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = TooManyRequests::responses();
        responses.append(&mut Unavailable::responses());
        responses
    }
}

/// The body of a `202` to `POST /v1/checkouts`. The handler writes it by hand (it runs once
/// per checkout); the tests read a real answer into this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Accepted)]
pub struct AcceptedBody {
    /// The new order's id.
    pub order_id: OrderId,
    /// Always `accepted`.
    pub status: AcceptedStatus,
    /// Where to read the order: `/v1/orders/{order_id}`.
    pub status_url: String,
    /// Where to follow it over WebSocket: `/v1/orders/{order_id}/ws`.
    pub events_url: String,
}

/// The status in a `202` to a checkout: the order is on the log, nothing more yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    /// Durably appended; the stages take it from there.
    Accepted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(json()).expect("the document is JSON")
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
        }
    }

    #[test]
    fn secured_operations_name_known_schemes_and_document_401() {
        let doc = doc();
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                let Some(security) = operation["security"].as_array() else {
                    continue;
                };
                for requirement in security {
                    for name in requirement.as_object().expect("requirement").keys() {
                        assert!(schemes.contains_key(name), "{method} {path}: {name}");
                    }
                }
                assert!(
                    operation["responses"].get("401").is_some(),
                    "{method} {path} needs a token but does not document 401"
                );
            }
        }
    }
}
