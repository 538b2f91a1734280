//! A consumer-group member on Kafka: rebalances, lag statistics, offsets stored after the
//! outputs landed, and the exactly-once mode's transactions.

use super::*;

/// Callbacks of one group member: commit on revoke, lag metrics, assignment tracking.
pub(super) struct GroupContext {
    pub(super) group: String,
    pub(super) assigned: AtomicBool,
    pub(super) exactly_once: bool,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; -1 lag is unknown.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "orderflow_stage_consumer_lag",
                    "stage" => self.group.clone(),
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.assigned.store(false, Ordering::Release);
            // Hand over what was finished, so the next owner starts there rather than at the
            // last auto-commit (at worst it repeats a second of records). In exactly-once mode
            // the offsets travelled inside the transactions already.
            if !self.exactly_once
                && partitions.count() > 0
                // Async: this callback runs inside a poll on the async runtime.
                && let Err(e) = consumer.commit_consumer_state(CommitMode::Async)
                && !matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(group = %self.group, error = %e, "Cannot commit on partition revoke; the next owner repeats some records");
            }
            tracing::info!(group = %self.group, partitions = partitions.count(), "Partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.assigned.store(true, Ordering::Release);
                tracing::info!(group = %self.group, partitions = partitions.count(), "Partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "Rebalance failed");
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result
            && !matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset))
        {
            tracing::warn!(group = %self.group, error = %e, "Offset commit failed; it is retried with the next one");
        }
    }
}

/// A consumer's transactional producer (exactly-once mode).
pub(super) struct Transactions {
    pub(super) producer: FutureProducer,
    pub(super) config: Arc<KafkaConfig>,
    pub(super) id: String,
}

impl Transactions {
    pub(super) async fn start(config: &KafkaConfig, group: &str) -> Result<Self, LogError> {
        let id = format!("orderflow-{group}-{}", uuid::Uuid::now_v7());
        let producer = Self::producer(config, &id).await?;
        Ok(Self {
            producer,
            config: Arc::new(config.clone()),
            id,
        })
    }

    async fn producer(config: &KafkaConfig, id: &str) -> Result<FutureProducer, LogError> {
        let producer: FutureProducer = config
            .producer_config()
            .set("transactional.id", id)
            // A worker killed mid-transaction blocks readers of its output partitions until
            // the broker aborts the transaction: keep that short. librdkafka needs it to be at
            // least the message timeout.
            .set(
                "transaction.timeout.ms",
                config
                    .message_timeout
                    .max(Duration::from_secs(10))
                    .as_millis()
                    .to_string(),
            )
            .create()
            .map_err(|e| LogError::refused("kafka transactional producer", e))?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(TXN_CALL_TIMEOUT))
            .await
            .map_err(|e| LogError::backend("transaction task failed", e))?
            .map_err(unavailable)?;
        Ok(producer)
    }

    /// Replaces a producer that hit a fatal error (fenced, or its epoch lost).
    async fn renew(&mut self) -> Result<(), LogError> {
        let fresh = Self::producer(&self.config, &self.id).await?;
        drop_blocking(std::mem::replace(&mut self.producer, fresh)).await;
        Ok(())
    }

    /// Ends a failed transaction: aborts it, or renews the producer when it cannot go on.
    async fn abort_or_renew(&mut self, cause: &KafkaError) -> Result<(), LogError> {
        if !txn_flags(cause).fatal {
            let p = self.producer.clone();
            let aborted =
                tokio::task::spawn_blocking(move || p.abort_transaction(TXN_CALL_TIMEOUT)).await;
            if matches!(aborted, Ok(Ok(()))) {
                return Ok(());
            }
        }
        tracing::warn!(error = %cause, "Transaction could not be aborted; renewing the producer");
        self.renew().await
    }
}

/// One member of a consumer group on Kafka.
pub(super) struct KafkaConsumer {
    pub(super) consumer: Arc<StreamConsumer<GroupContext>>,
    /// Records fetched while waiting for the first assignment.
    pub(super) pending: VecDeque<Record>,
    /// Appends outputs and stores offsets; shared with the runner, which completes one batch
    /// while it polls the next.
    pub(super) committer: Arc<KafkaCommitter>,
    /// `orderflow_kafka_record_wait_seconds{stage}`: from the producer's send of a record to
    /// this member's poll handing it out (linger, broker, fetch wait and the stage's backlog).
    pub(super) record_wait: metrics::Histogram,
}

impl KafkaConsumer {
    /// Serves the consumer (which runs the group join) until partitions arrive.
    pub(super) async fn wait_for_assignment(&mut self, limit: Duration) -> Result<(), LogError> {
        let deadline = Instant::now() + limit;
        while !self.consumer.context().assigned.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                return Err(LogError::Unavailable(format!(
                    "no partitions assigned to group {} within {limit:?}",
                    self.consumer.context().group
                )));
            }
            match tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await {
                Ok(Ok(m)) => self.pending.push_back(to_record(&m)),
                Ok(Err(e)) => tracing::warn!(error = %e, "Consumer error while joining the group"),
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// Completes a Kafka member's batches: outputs sent and acknowledged, then offsets stored (or
/// both in one transaction in exactly-once mode).
pub(super) struct KafkaCommitter {
    pub(super) consumer: Arc<StreamConsumer<GroupContext>>,
    pub(super) producer: Arc<SharedProducer>,
    /// One transaction at a time; the runner completes batches one after the other anyway.
    pub(super) transactions: Option<tokio::sync::Mutex<Transactions>>,
    pub(super) message_timeout: Duration,
}

impl KafkaCommitter {
    fn offsets_list(offsets: &Offsets) -> Result<TopicPartitionList, LogError> {
        let mut tpl = TopicPartitionList::new();
        for (TopicPartition { topic, partition }, next) in offsets {
            let partition = i32::try_from(*partition)
                .map_err(|_| LogError::Invalid(format!("partition {partition} out of range")))?;
            let next = i64::try_from(*next)
                .map_err(|_| LogError::Invalid(format!("offset {next} out of range")))?;
            tpl.add_partition_offset(topic, partition, Offset::Offset(next))
                .map_err(unavailable)?;
        }
        Ok(tpl)
    }

    async fn complete_at_least_once(
        &self,
        outputs: Vec<Message>,
        offsets: Offsets,
    ) -> Result<(), LogError> {
        self.producer.send(&outputs).await?;
        self.store(offsets)
    }

    /// Stores the offsets of the partitions this member still owns, for the next auto-commit.
    fn store(&self, offsets: Offsets) -> Result<(), LogError> {
        let owned = self.owned(offsets)?;
        if owned.is_empty() {
            return Ok(());
        }
        self.consumer
            .store_offsets(&Self::offsets_list(&owned)?)
            .map_err(unavailable)
    }

    async fn complete_in_transaction(
        &self,
        outputs: Vec<Message>,
        offsets: Offsets,
    ) -> Result<(), LogError> {
        let tpl = Self::offsets_list(&self.owned(offsets)?)?;
        let metadata = self.consumer.group_metadata().ok_or_else(|| {
            LogError::Unavailable("the consumer has no group metadata yet".into())
        })?;
        let Some(transactions) = self.transactions.as_ref() else {
            return Err(LogError::Invalid("no transactional producer".into()));
        };
        let mut tx = transactions.lock().await;
        if let Err(e) = tx.producer.begin_transaction() {
            if txn_flags(&e).fatal {
                tx.renew().await?;
            }
            return Err(unavailable(e));
        }
        if let Err(e) = send_all(&tx.producer, &outputs, self.message_timeout).await {
            tx.abort_or_renew(&e).await?;
            return Err(send_error(e));
        }
        let p = tx.producer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            if tpl.count() > 0 {
                p.send_offsets_to_transaction(&tpl, &metadata, TXN_CALL_TIMEOUT)?;
            }
            // A commit that timed out carries on in the broker: ask again, never abort it
            // (an abort would be refused, and a new producer would let the old commit finish
            // while the caller sent the same outputs again).
            let mut tries = 0;
            loop {
                match p.commit_transaction(TXN_CALL_TIMEOUT) {
                    Err(e) if txn_flags(&e).retriable && tries < 10 => tries += 1,
                    other => return other,
                }
            }
        })
        .await
        .map_err(|e| LogError::backend("transaction task failed", e))?;
        let Err(e) = committed else {
            return Ok(());
        };
        tx.abort_or_renew(&e).await?;
        if is_membership_error(&e) {
            // This member lost its place in the group while the batch ran. It rejoins on its
            // next poll and every partition it then gets starts at the committed offsets, so
            // the batch is read again by whoever owns it; retrying it here would fail forever.
            tracing::warn!(group = %self.consumer.context().group, error = %e, "Group membership lost during a transaction; the batch will be read again");
            return Ok(());
        }
        // The caller retries this batch's outputs and offsets in a new transaction; the fetch
        // position stays past the batch, so nothing is read twice. A worker that dies first
        // leaves the batch to the next owner, from the committed offsets.
        Err(unavailable(e))
    }

    /// The offsets of partitions this member still owns. A partition revoked while the batch
    /// ran belongs to another member now, which repeats those records (every side effect is
    /// idempotent); committing for it would overwrite that member's progress.
    fn owned(&self, offsets: Offsets) -> Result<Offsets, LogError> {
        let assignment = self.consumer.assignment().map_err(unavailable)?;
        Ok(offsets
            .into_iter()
            .filter(|(TopicPartition { topic, partition }, _)| {
                let owned = i32::try_from(*partition)
                    .is_ok_and(|p| assignment.find_partition(topic, p).is_some());
                if !owned {
                    tracing::debug!(%topic, partition, "Not committing the offset of a revoked partition");
                }
                owned
            })
            .collect())
    }
}

#[async_trait]
impl Committer for KafkaCommitter {
    async fn complete(&self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        if self.transactions.is_some() {
            self.complete_in_transaction(outputs, offsets).await
        } else {
            self.complete_at_least_once(outputs, offsets).await
        }
    }

    /// At least once, a few batches' produce requests wait for the broker together; in a
    /// transaction, one batch at a time.
    fn sends_ahead(&self) -> usize {
        if self.transactions.is_some() {
            1
        } else {
            SENDS_AHEAD
        }
    }

    async fn send(&self, outputs: &[Message]) -> Result<(), LogError> {
        self.producer.send(outputs).await.map(|_| ())
    }

    async fn commit(&self, offsets: Offsets) -> Result<(), LogError> {
        self.store(offsets)
    }
}

/// Batches a member at least once may have on their way to the broker at once. Measured on
/// tansu at 2,000 orders/s: the mean accept→terminal about 0.8× against 1 (BENCHMARKS.md,
/// "Batches sent ahead over Kafka").
const SENDS_AHEAD: usize = 3;

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let mut records: Vec<Record> = Vec::with_capacity(max.min(1024));
        while records.len() < max
            && let Some(r) = self.pending.pop_front()
        {
            records.push(r);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let waited = |m: &BorrowedMessage<'_>| {
            if let Some(sent) = m.timestamp().to_millis() {
                let ms = u64::try_from(now_ms.saturating_sub(sent)).unwrap_or(0);
                self.record_wait.record(Duration::from_millis(ms));
            }
        };
        let mut stream = self.consumer.stream();
        if records.is_empty() {
            match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(Ok(m))) => {
                    waited(&m);
                    records.push(to_record(&m));
                }
                Ok(Some(Err(e))) => return Err(unavailable(e)),
                Ok(None) | Err(_) => return Ok(records),
            }
        }
        // Take what is already fetched, without waiting for more.
        while records.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    waited(&m);
                    records.push(to_record(&m));
                }
                Some(Some(Err(e))) => {
                    tracing::debug!(error = %e, "Consumer error after a fetched batch");
                    break;
                }
                Some(None) | None => break,
            }
        }
        Ok(records)
    }

    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        Committer::complete(&*self.committer, outputs, offsets).await
    }

    fn committer(&self) -> Arc<dyn Committer> {
        Arc::clone(&self.committer) as Arc<dyn Committer>
    }

    async fn close(&mut self) {
        if self.committer.transactions.is_some() {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(e)) if matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::NoOffset)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Cannot commit offsets while closing"),
            Err(e) => tracing::warn!(error = %e, "Commit task failed while closing"),
        }
    }
}
