//! How the producer compresses its batches before they go to the broker.

/// A producer's batch compression (`compression.type`): brokers store the batches as they come
/// and consumers decompress them, so it cuts network and broker disk at once. Configured as
/// `kafka.compression` (`lz4`, `snappy`, `gzip`, `none`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Batches go as they are.
    None,
    /// gzip: the smallest batches for the most CPU.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4: little CPU, and a batch of the pipeline's JSON events shrinks to about an eighth.
    #[default]
    Lz4,
}

impl Compression {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}
