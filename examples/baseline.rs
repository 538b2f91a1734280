//! The load tests' baseline: a minimal axum server that parses the same checkout body as
//! orderflow and answers 202 with the same shape, doing nothing else. Every report states
//! orderflow's figures as a ratio to this one's, measured by the same generator in the same run.
//!
//! ```text
//! cargo run --release --example baseline -- [LISTEN=127.0.0.1:18090]
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use orderflow_domain::{CheckoutRequest, OrderId};

/// The same allocator as orderflow, so the comparison is like for like.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

async fn checkout(headers: HeaderMap, body: Bytes) -> Response {
    // The same checks orderflow makes before it touches anything: a bearer token is present
    // and the body is a checkout.
    if !headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(request) = serde_json::from_slice::<CheckoutRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if !request.structural_problems().is_empty() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let id = OrderId::new();
    (
        StatusCode::ACCEPTED,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::LOCATION, format!("/v1/orders/{id}")),
        ],
        format!(
            r#"{{"order_id":"{id}","status":"accepted","status_url":"/v1/orders/{id}","events_url":"/v1/orders/{id}/ws"}}"#
        ),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let app = Router::new()
        .route("/v1/checkouts", post(checkout))
        .route("/readyz", get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
