//! Dead letters, both halves: how a record that a stage gave up on is written to `T.dlq`
//! ([`dead_letter`]), how dead letters are read ([`list`]) and how they are put back on the
//! topic they came from ([`replay`]). The headers they carry are in [`header`].

use crate::log::{Log, LogError, Message, Offsets, Record, header};
use crate::stage::StageError;
use std::collections::HashSet;
use std::time::Duration;

/// The dead-letter topic that sits beside `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The consumer group whose committed position marks what [`replay`] has put back.
pub const REPLAY_GROUP: &str = "orderflow-dlq-replay";

/// The dead letter of `record`: same key and value, with headers that say where it came from
/// and why it stopped, so it can be replayed to its source topic.
pub fn dead_letter(stage: &str, record: &Record, error: &StageError, attempts: u32) -> Message {
    let mut headers: Vec<(String, String)> = record
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with("dlq-"))
        .cloned()
        .collect();
    headers.extend([
        (header::DLQ_STAGE.to_owned(), stage.to_owned()),
        (
            header::DLQ_ERROR.to_owned(),
            error.message.chars().take(1024).collect(),
        ),
        (header::DLQ_ATTEMPTS.to_owned(), attempts.to_string()),
        (header::DLQ_SOURCE_TOPIC.to_owned(), record.topic.clone()),
        (
            header::DLQ_SOURCE_PARTITION.to_owned(),
            record.partition.to_string(),
        ),
        (
            header::DLQ_SOURCE_OFFSET.to_owned(),
            record.offset.to_string(),
        ),
    ]);
    Message {
        topic: dlq_topic(&record.topic),
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
        decoded: None,
    }
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records put back on their source topics.
    pub replayed: usize,
    /// Records whose source topic is not one of ours (left where they are, position passed).
    pub skipped: Vec<String>,
}

/// Puts the dead letters of `dlq` back on the topics they came from, oldest first, at most
/// `limit`; each record is replayed once (the replay's position is committed like a stage's,
/// only after the replayed records are on their topics). `sources` are the topics a record may
/// go back to. `progress` hears the running count after each batch.
pub async fn replay(
    log: &dyn Log,
    dlq: &str,
    sources: &[String],
    limit: usize,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<ReplayReport, LogError> {
    let mut consumer = log
        .consumer(REPLAY_GROUP, std::slice::from_ref(&dlq.to_owned()))
        .await?;
    // Records this run put back can fail again and land behind us in the same partition; such
    // a partition is finished for this run, and its position stays at that record so a later
    // run (after a fix) replays it.
    let run = uuid::Uuid::now_v7().to_string();
    let mut finished: HashSet<u32> = HashSet::new();
    let mut report = ReplayReport::default();
    while report.replayed + report.skipped.len() < limit {
        let seen = report.replayed + report.skipped.len();
        // The first fetch after joining takes longest; after that, 2 s of quiet means done.
        let wait = Duration::from_secs(if seen == 0 { 5 } else { 2 });
        let batch = consumer.poll((limit - seen).min(500), wait).await?;
        if batch.is_empty() {
            break;
        }
        let mut outputs = Vec::with_capacity(batch.len());
        let mut offsets = Offsets::new();
        for r in &batch {
            if finished.contains(&r.partition) {
                continue;
            }
            if r.header(header::REPLAY_RUN) == Some(run.as_str()) {
                finished.insert(r.partition);
                offsets.insert(r.topic_partition(), r.offset);
                continue;
            }
            let next = offsets.entry(r.topic_partition()).or_insert(0);
            *next = (*next).max(r.offset + 1);
            let source = r.header(header::DLQ_SOURCE_TOPIC).unwrap_or_default();
            if !sources.iter().any(|t| t == source) || source.ends_with(".dlq") {
                report.skipped.push(format!(
                    "{}/{}/{}: no known source topic ({source:?})",
                    r.topic, r.partition, r.offset
                ));
                continue;
            }
            outputs.push(replayed(r, source, &run));
            report.replayed += 1;
        }
        // The position moves only after the replayed records are on their topics: a replay
        // interrupted here repeats some records (stages take repeats), and loses none.
        consumer.complete(outputs, offsets).await?;
        progress(report.replayed);
    }
    consumer.close().await;
    Ok(report)
}

/// The message that puts dead letter `r` back on `source`, marked with this replay `run`.
fn replayed(r: &Record, source: &str, run: &str) -> Message {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with("dlq-") && !n.starts_with("replay"))
        .cloned()
        .collect();
    headers.push((
        header::REPLAYED_FROM.to_owned(),
        format!("{}/{}/{}", r.topic, r.partition, r.offset),
    ));
    headers.push((header::REPLAY_RUN.to_owned(), run.to_owned()));
    if let Some(stage) = r.header(header::DLQ_STAGE) {
        headers.push((header::REPLAY_FOR.to_owned(), stage.to_owned()));
    }
    Message {
        topic: source.to_owned(),
        key: r.key.clone(),
        value: r.value.clone(),
        headers,
        decoded: None,
    }
}

/// One dead letter as `orderflow dlq list` shows it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record in the dead-letter topic.
    pub record: Record,
}

impl DeadLetter {
    /// One line: position, key, stage, attempts, source position and error.
    pub fn summary(&self) -> String {
        let r = &self.record;
        let field = |name: &str| r.header(name).unwrap_or("-").to_owned();
        format!(
            "{}/{} key={} stage={} attempts={} source={}/{}/{} error={}",
            r.partition,
            r.offset,
            String::from_utf8_lossy(&r.key),
            field(header::DLQ_STAGE),
            field(header::DLQ_ATTEMPTS),
            field(header::DLQ_SOURCE_TOPIC),
            field(header::DLQ_SOURCE_PARTITION),
            field(header::DLQ_SOURCE_OFFSET),
            field(header::DLQ_ERROR),
        )
    }
}

/// The first `limit` dead letters of `dlq`, oldest first.
pub async fn list(log: &dyn Log, dlq: &str, limit: usize) -> Result<Vec<DeadLetter>, LogError> {
    Ok(log
        .read(dlq, limit)
        .await?
        .into_iter()
        .map(|record| DeadLetter { record })
        .collect())
}
