//! The business stages of the checkout pipeline and the status projector.
//!
//! [`topology`] says which stage reads and writes which topic. Each stage is one file with one
//! struct built from its dependencies: [`validate`], [`reserve`], [`price`], [`charge`] (with the
//! [`charge::PaymentProvider`] trait and its simulated provider), [`ship`], [`notify`], [`refund`]
//! (pays refunds of a capture), and the projector [`project`]; [`expiry`] is the sweeper that ends lapsed stock holds; [`deliver`]
//! sends what the outbox holds (webhooks, emails). The order
//! stages implement [`OrderStage`]; [`OnOrders`] adapts one to the pipeline's
//! [`Stage`](orderflow_pipeline::Stage): it decodes the event, routes the result to the stage's
//! output or to `orders.rejected`, and stamps the headers.

pub mod cancel;
pub mod charge;
pub mod deliver;
pub mod expiry;
pub mod notify;
pub mod order_stage;
pub mod price;
pub mod project;
pub mod refund;
pub mod reserve;
pub mod ship;
pub mod topology;
pub mod validate;

pub use order_stage::{OnOrders, OrderStage, Step};
