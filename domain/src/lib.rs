//! Domain types of orderflow: ids, money, orders and their events, the catalog, and the wire codec.
//!
//! Everything here is plain data with no I/O. Stages, stores and the API share these types, and
//! [`codec`] turns an [`OrderEvent`] into the bytes that travel on the log. The types the API
//! reads and answers derive `utoipa::ToSchema`; [`schema`] holds what the derive cannot say and
//! [`number`] reads whole numbers written as `2.0`.

pub mod catalog;
pub mod codec;
pub mod ids;
pub mod money;
pub mod number;
pub mod order;
pub mod pricing;
pub mod refund;
pub mod schema;
pub mod status;
pub mod timestamp;
pub mod view;

pub use catalog::{Catalog, CatalogError, CatalogItem};
pub use codec::{CodecError, decode_event, encode_event};
pub use ids::OrderId;
pub use money::{Currency, Money, MoneyError};
pub use order::{
    Address, CheckoutRequest, LineItem, Notification, Order, OrderEvent, Payment, PaymentRequest,
    Rejection, RejectionCode, Reservation, Shipment,
};
pub use pricing::{
    AppliedPromotion, Cart, CouponReason, LineDiscount, PriceBook, PriceBreakdown, PriceError,
    PricedLine, Promotion, Promotions, Quote, RejectedCoupon, SharedPriceBook, TableError, TaxLine,
};
pub use refund::{
    Cancellation, PaymentStatus, PaymentSummary, Refund, RefundStatus, cancellation_refund_id,
    new_refund_id,
};
pub use status::OrderStatus;
pub use view::{OrderView, TimelineEntry};
