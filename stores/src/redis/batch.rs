//! The scripts, loaded once, and the call path that pipelines calls arriving together.

use super::redis_error;
use crate::StoreError;
use fred::prelude::*;
use fred::types::CustomCommand;
use fred::types::scripts::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The Lua sources, one file each beside this module.
pub mod lua {
    /// Reserves every line of an order, all or nothing.
    pub const RESERVE: &str = include_str!("lua/reserve.lua");
    /// Returns held units to available.
    pub const RELEASE: &str = include_str!("lua/release.lua");
    /// Moves held units to committed.
    pub const COMMIT: &str = include_str!("lua/commit.lua");
    /// Exempts a hold from expiry.
    pub const PIN: &str = include_str!("lua/pin.lua");
    /// Releases expired holds and lists those to announce.
    pub const EXPIRE: &str = include_str!("lua/expire.lua");
    /// Creates missing SKUs.
    pub const SEED: &str = include_str!("lua/seed.lua");
    /// Sets a SKU's available units.
    pub const SET_AVAILABLE: &str = include_str!("lua/set_available.lua");
    /// Claims a taken `Idempotency-Key`.
    pub const IDEMPOTENCY_CLAIM: &str = include_str!("lua/idempotency_claim.lua");
    /// Completes or abandons a claim.
    pub const IDEMPOTENCY_SETTLE: &str = include_str!("lua/idempotency_settle.lua");
    /// Stores a newer hot view.
    pub const VIEW_PUT: &str = include_str!("lua/view_put.lua");
    /// Redeems a coupon once per order, within its limit.
    pub const COUPON_REDEEM: &str = include_str!("lua/coupon_redeem.lua");
    /// Gives a coupon use back.
    pub const COUPON_RESTORE: &str = include_str!("lua/coupon_restore.lua");
    /// Takes a token from a rate-limit bucket.
    pub const RATE_LIMIT: &str = include_str!("lua/rate_limit.lua");
}

/// Which script to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ScriptName {
    Reserve,
    Release,
    Commit,
    Pin,
    Expire,
    Seed,
    SetAvailable,
    IdempotencyClaim,
    IdempotencySettle,
    ViewPut,
    CouponRedeem,
    CouponRestore,
    RateLimit,
}

impl ScriptName {
    const ALL: [ScriptName; 13] = [
        Self::Reserve,
        Self::Release,
        Self::Commit,
        Self::Pin,
        Self::Expire,
        Self::Seed,
        Self::SetAvailable,
        Self::IdempotencyClaim,
        Self::IdempotencySettle,
        Self::ViewPut,
        Self::CouponRedeem,
        Self::CouponRestore,
        Self::RateLimit,
    ];

    fn source(self) -> &'static str {
        match self {
            Self::Reserve => lua::RESERVE,
            Self::Release => lua::RELEASE,
            Self::Commit => lua::COMMIT,
            Self::Pin => lua::PIN,
            Self::Expire => lua::EXPIRE,
            Self::Seed => lua::SEED,
            Self::SetAvailable => lua::SET_AVAILABLE,
            Self::IdempotencyClaim => lua::IDEMPOTENCY_CLAIM,
            Self::IdempotencySettle => lua::IDEMPOTENCY_SETTLE,
            Self::ViewPut => lua::VIEW_PUT,
            Self::CouponRedeem => lua::COUPON_REDEEM,
            Self::CouponRestore => lua::COUPON_RESTORE,
            Self::RateLimit => lua::RATE_LIMIT,
        }
    }
}

/// The SHA1 of a script, as `EVALSHA` wants it.
pub fn sha1_of(source: &str) -> String {
    fred::util::sha1_hash(source)
}

/// One script call waiting for its pipeline.
struct Call {
    script: ScriptName,
    keys: Vec<String>,
    args: Vec<String>,
    reply: oneshot::Sender<Result<Value, Error>>,
}

/// The loaded scripts and the pipelining call path.
#[derive(Clone)]
pub struct Scripts {
    client: Client,
    scripts: Arc<Vec<(ScriptName, Script)>>,
    calls: mpsc::UnboundedSender<Call>,
    pipelines: Arc<AtomicU64>,
}

/// At most this many calls leave in one pipeline.
const MAX_PIPELINE: usize = 512;
/// At most this many pipelines are in flight at once.
const MAX_IN_FLIGHT: usize = 4;

impl Scripts {
    /// Loads every script (`SCRIPT LOAD`) and starts the pipelining task.
    pub(crate) async fn load(client: Client) -> Result<Self, StoreError> {
        let scripts: Vec<(ScriptName, Script)> = ScriptName::ALL
            .iter()
            .map(|name| (*name, Script::from_lua(name.source())))
            .collect();
        for (_, script) in &scripts {
            script.load(&client).await.map_err(redis_error)?;
        }
        let (calls, queue) = mpsc::unbounded_channel();
        let this = Self {
            client,
            scripts: Arc::new(scripts),
            calls,
            pipelines: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(this.clone().pipeline_loop(queue));
        Ok(this)
    }

    fn sha(&self, name: ScriptName) -> String {
        self.scripts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.sha1().to_string())
            .unwrap_or_default()
    }

    /// How many pipelines have been sent (each a single round trip).
    pub fn pipelines_sent(&self) -> u64 {
        self.pipelines.load(Ordering::Relaxed)
    }

    /// Runs a script by `EVALSHA`, in the same pipeline as the calls queued beside it.
    pub(crate) async fn call<R: FromValue>(
        &self,
        script: ScriptName,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call {
                script,
                keys,
                args,
                reply,
            })
            .map_err(|_| StoreError::Unavailable("the redis call queue is closed".into()))?;
        let value = answer
            .await
            .map_err(|_| StoreError::Unavailable("the redis pipeline task stopped".into()))?
            .map_err(redis_error)?;
        value.convert().map_err(redis_error)
    }

    /// Takes whatever calls are queued, up to [`MAX_PIPELINE`], and sends them in one pipeline.
    async fn pipeline_loop(self, mut queue: mpsc::UnboundedReceiver<Call>) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_PIPELINE {
                match queue.try_recv() {
                    Ok(call) => batch.push(call),
                    Err(_) => break,
                }
            }
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.send(batch).await;
                drop(permit);
            });
        }
    }

    async fn send(&self, batch: Vec<Call>) {
        self.pipelines.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("orderflow_redis_pipeline_calls").record(batch.len() as f64);
        let mut results = self.run(&batch).await;
        // After a Redis restart or SCRIPT FLUSH the scripts are gone: load them and run again
        // the calls that were refused (a refused call did nothing).
        if results
            .iter()
            .any(|r| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
        {
            let mut reload = Ok(());
            for (_, script) in self.scripts.iter() {
                if let Err(e) = script.load(&self.client).await {
                    reload = Err(e);
                    break;
                }
            }
            if reload.is_ok() {
                let again: Vec<usize> = results
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
                    .map(|(i, _)| i)
                    .collect();
                let retry: Vec<&Call> = again.iter().map(|i| &batch[*i]).collect();
                let rerun = self.run_refs(&retry).await;
                for (i, result) in again.into_iter().zip(rerun) {
                    results[i] = result;
                }
            }
        }
        for (call, result) in batch.into_iter().zip(results) {
            let _ = call.reply.send(result);
        }
    }

    async fn run(&self, batch: &[Call]) -> Vec<Result<Value, Error>> {
        let refs: Vec<&Call> = batch.iter().collect();
        self.run_refs(&refs).await
    }

    async fn run_refs(&self, batch: &[&Call]) -> Vec<Result<Value, Error>> {
        if let [call] = batch {
            return vec![
                self.client
                    .evalsha(self.sha(call.script), call.keys.clone(), call.args.clone())
                    .await,
            ];
        }
        let pipeline = self.client.pipeline();
        for call in batch {
            // fred's pipelines have no EVALSHA method; the raw command routes by its first key
            // (every key of a call shares one hash slot).
            let slot = call
                .keys
                .first()
                .map(|key| fred::util::redis_keyslot(key.as_bytes()));
            let mut args: Vec<Value> = Vec::with_capacity(2 + call.keys.len() + call.args.len());
            args.push(self.sha(call.script).into());
            args.push(Value::Integer(call.keys.len() as i64));
            args.extend(call.keys.iter().map(|k| Value::from(k.as_str())));
            args.extend(call.args.iter().map(|a| Value::from(a.as_str())));
            let queued: Result<Value, Error> = pipeline
                .custom(CustomCommand::new_static("EVALSHA", slot, false), args)
                .await;
            if let Err(e) = queued {
                return batch.iter().map(|_| Err(e.clone())).collect();
            }
        }
        let results = pipeline.try_all::<Value>().await;
        if results.len() == batch.len() {
            results
        } else {
            // A pipeline that failed as a whole answers once; every call gets that answer.
            let e = results
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| Error::new(ErrorKind::Unknown, "pipeline answered short"));
            batch.iter().map(|_| Err(e.clone())).collect()
        }
    }
}
