//! The [`Outbox`] trait: messages to deliver (customer emails, merchant webhooks), written once
//! per order, event and destination, then delivered with retries and kept for a while.

use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use serde::{Deserialize, Serialize};

/// A message to write into the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// What makes the message unique: a second message with the same key is not written.
    pub key: String,
    /// The order it is about.
    pub order_id: OrderId,
    /// The event (`order.completed`, `order.rejected`) or the email's template.
    pub event: String,
    /// Where it goes: a webhook endpoint's name, or [`MAIL`].
    pub destination: String,
    /// The body to deliver, as it will be sent (JSON or an email's text).
    pub payload: String,
}

/// The destination of customer emails.
pub const MAIL: &str = "mail";

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    /// Delivered (the receiver answered 2xx, or the mail is in the sink).
    Delivered,
    /// Given up after retrying for the configured time; `POST …/retry` sends it again.
    Failed,
}

impl DeliveryState {
    /// The state's name in the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One try at delivering a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// A message in the outbox with its delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message's id (`msg_…`, time-ordered): the `webhook-id` of every try.
    pub id: String,
    /// Its uniqueness key.
    pub key: String,
    /// The order it is about.
    pub order_id: OrderId,
    /// The event or template.
    pub event: String,
    /// The endpoint's name, or [`MAIL`].
    pub destination: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Where it stands.
    pub state: DeliveryState,
    /// When it is tried next (pending messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every try so far, oldest first (the last 20 kept).
    pub attempts: Vec<Attempt>,
    /// The body, as sent. Not part of the serialized record: stores keep it beside it as it
    /// is, so an email's text is not escaped into JSON and back at every try.
    #[serde(skip)]
    pub payload: String,
}

/// The most tries a delivery record keeps.
pub const KEPT_ATTEMPTS: usize = 20;

/// What a try led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: done.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Give up: the message stays, `failed`, until retried by hand.
    GiveUp,
}

/// One try of one message and what follows it, as the dispatcher records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The message.
    pub id: String,
    /// The try.
    pub attempt: Attempt,
    /// What follows.
    pub next: Next,
}

/// Which messages a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Only messages in this state.
    pub state: Option<DeliveryState>,
    /// Only messages about this order.
    pub order_id: Option<OrderId>,
    /// Messages older than this id (the previous page's last), newest first.
    pub before: Option<String>,
    /// Most messages on the page.
    pub limit: usize,
}

/// The id of a new message: `msg_` and a UUIDv7 in hex, so ids sort by time of writing.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// Messages waiting for delivery, with their delivery records.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Writes messages whose keys are new, each `pending` and due now, all at once; how many
    /// were new.
    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<usize, StoreError>;

    /// Pending messages due at `now`, oldest due first, at most `limit`.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Records tries (a dispatcher round's, all at once) and what follows each; how many named
    /// a message that exists.
    async fn record(&self, tries: Vec<Tried>) -> Result<usize, StoreError>;

    /// One message.
    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError>;

    /// Messages newest first, filtered by `listing`.
    async fn list(&self, listing: &Listing) -> Result<Vec<Delivery>, StoreError>;

    /// Makes message `id` pending and due at `now` again, whatever its state; the message
    /// after, or `None` if there is no such message.
    async fn retry(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Delivery>, StoreError>;

    /// Removes at most `limit` messages delivered before `before`, oldest first (their keys
    /// too); how many went. Fewer than `limit` means none older is left.
    async fn purge_delivered(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// How many messages are kept, in every state.
    async fn count(&self) -> Result<u64, StoreError>;
}
