//! Identifiers: orders are UUIDv7, so they sort by creation time.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// The id of one order: a UUIDv7 minted by the ingest when it accepts a checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// Mints a new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id's 16 bytes, used as a storage key.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// On the API: the UUID's hyphenated text.
impl utoipa::PartialSchema for OrderId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
        // By name: utoipa's `KnownFormat::Uuid` needs its `uuid` feature for this one field.
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .description(Some("UUIDv7 order id"))
            .into()
    }
}

impl utoipa::ToSchema for OrderId {}

impl FromStr for OrderId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_round_trip_through_text() {
        let id = OrderId::new();
        assert_eq!(id.0.get_version_num(), 7);
        let parsed: OrderId = id.to_string().parse().expect("parses");
        assert_eq!(parsed, id);
        assert!("not-a-uuid".parse::<OrderId>().is_err());
    }
}
