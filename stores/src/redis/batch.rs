//! The scripts, loaded once, and the call path.

use super::redis_error;
use crate::StoreError;
use fred::prelude::*;
use fred::types::CustomCommand;
use fred::types::scripts::Script;
use std::sync::Arc;

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
    /// Marks expiries announced.
    pub const ACKNOWLEDGE: &str = include_str!("lua/acknowledge.lua");
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
    /// Cancels an order unless it shipped or was refused first.
    pub const CANCEL: &str = include_str!("lua/cancel.lua");
    /// Marks an unreserved order refused unless it was cancelled.
    pub const REFUSE: &str = include_str!("lua/refuse.lua");
    /// Counts a refund against the capture.
    pub const REFUND_REQUEST: &str = include_str!("lua/refund_request.lua");
    /// Gives a failed refund back to the capture.
    pub const REFUND_FAIL: &str = include_str!("lua/refund_fail.lua");
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
    Acknowledge,
    Seed,
    SetAvailable,
    IdempotencyClaim,
    IdempotencySettle,
    ViewPut,
    CouponRedeem,
    CouponRestore,
    RateLimit,
    Cancel,
    Refuse,
    RefundRequest,
    RefundFail,
}

impl ScriptName {
    /// The script's name in metrics.
    fn label(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Release => "release",
            Self::Commit => "commit",
            Self::Pin => "pin",
            Self::Expire => "expire",
            Self::Acknowledge => "acknowledge",
            Self::Seed => "seed",
            Self::SetAvailable => "set_available",
            Self::IdempotencyClaim => "idempotency_claim",
            Self::IdempotencySettle => "idempotency_settle",
            Self::ViewPut => "view_put",
            Self::CouponRedeem => "coupon_redeem",
            Self::CouponRestore => "coupon_restore",
            Self::RateLimit => "rate_limit",
            Self::Cancel => "cancel",
            Self::Refuse => "refuse",
            Self::RefundRequest => "refund_request",
            Self::RefundFail => "refund_fail",
        }
    }

    const ALL: [ScriptName; 18] = [
        Self::Reserve,
        Self::Release,
        Self::Commit,
        Self::Pin,
        Self::Expire,
        Self::Acknowledge,
        Self::Seed,
        Self::SetAvailable,
        Self::IdempotencyClaim,
        Self::IdempotencySettle,
        Self::ViewPut,
        Self::CouponRedeem,
        Self::CouponRestore,
        Self::RateLimit,
        Self::Cancel,
        Self::Refuse,
        Self::RefundRequest,
        Self::RefundFail,
    ];

    fn source(self) -> &'static str {
        match self {
            Self::Reserve => lua::RESERVE,
            Self::Release => lua::RELEASE,
            Self::Commit => lua::COMMIT,
            Self::Pin => lua::PIN,
            Self::Expire => lua::EXPIRE,
            Self::Acknowledge => lua::ACKNOWLEDGE,
            Self::Seed => lua::SEED,
            Self::SetAvailable => lua::SET_AVAILABLE,
            Self::IdempotencyClaim => lua::IDEMPOTENCY_CLAIM,
            Self::IdempotencySettle => lua::IDEMPOTENCY_SETTLE,
            Self::ViewPut => lua::VIEW_PUT,
            Self::CouponRedeem => lua::COUPON_REDEEM,
            Self::CouponRestore => lua::COUPON_RESTORE,
            Self::RateLimit => lua::RATE_LIMIT,
            Self::Cancel => lua::CANCEL,
            Self::Refuse => lua::REFUSE,
            Self::RefundRequest => lua::REFUND_REQUEST,
            Self::RefundFail => lua::REFUND_FAIL,
        }
    }
}

/// The SHA1 of a script, as `EVALSHA` wants it.
pub fn sha1_of(source: &str) -> String {
    fred::util::sha1_hash(source)
}

/// The loaded scripts and the call path.
///
/// Calls are sent as they come, on connections taken in turn. fred writes the commands that are
/// queued on a connection together and flushes once, so the calls of a stage's batch, which the
/// runner starts at once, leave in one write and share one round trip; each answer goes back to
/// its caller as soon as it arrives. (An explicit `Pipeline` measured slower: it hands back no
/// answer until the last one is in, which leaves Redis idle between batches.)
#[derive(Clone)]
pub struct Scripts {
    pool: Pool,
    scripts: Arc<Vec<(ScriptName, Script)>>,
    /// Each script's SHA1 as a command argument, indexed by `ScriptName as usize`.
    shas: Arc<Vec<Value>>,
    /// Each script's `orderflow_redis_script_seconds{script,outcome}` for answers and for
    /// failures (timeouts included), registered once, indexed like `shas`.
    timings: Arc<Vec<(metrics::Histogram, metrics::Histogram)>>,
}

impl Scripts {
    /// Loads every script (`SCRIPT LOAD`).
    pub(crate) async fn load(pool: Pool) -> Result<Self, StoreError> {
        debug_assert!(
            ScriptName::ALL
                .iter()
                .enumerate()
                .all(|(i, name)| *name as usize == i),
            "ScriptName::ALL is in declaration order"
        );
        let scripts: Vec<(ScriptName, Script)> = ScriptName::ALL
            .iter()
            .map(|name| (*name, Script::from_lua(name.source())))
            .collect();
        let this = Self {
            shas: Arc::new(
                scripts
                    .iter()
                    .map(|(_, script)| Value::from(script.sha1().clone()))
                    .collect(),
            ),
            timings: Arc::new(
                ScriptName::ALL
                    .iter()
                    .map(|name| {
                        let timing = |outcome: &'static str| {
                            metrics::histogram!(
                                "orderflow_redis_script_seconds",
                                "script" => name.label(),
                                "outcome" => outcome
                            )
                        };
                        (timing("ok"), timing("error"))
                    })
                    .collect(),
            ),
            scripts: Arc::new(scripts),
            pool,
        };
        this.reload().await?;
        Ok(this)
    }

    async fn reload(&self) -> Result<(), StoreError> {
        for (_, script) in self.scripts.iter() {
            script.load(self.pool.next()).await.map_err(redis_error)?;
        }
        Ok(())
    }

    /// Runs a script by `EVALSHA`; loads the scripts again if Redis lost them.
    pub(crate) async fn call<R: FromValue>(
        &self,
        script: ScriptName,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        // Every key of a call shares one hash slot; the command routes by it on a cluster.
        let slot = keys
            .first()
            .map(|key| fred::util::redis_keyslot(key.as_bytes()));
        let mut command = Vec::with_capacity(2 + keys.len() + args.len());
        // ALL lists the scripts in declaration order, so the discriminant indexes `shas`.
        command.push(self.shas[script as usize].clone());
        command.push(Value::Integer(keys.len() as i64));
        command.extend(keys.into_iter().map(Value::from));
        command.extend(args.into_iter().map(Value::from));
        let evalsha = || CustomCommand::new_static("EVALSHA", slot, false);
        let started = std::time::Instant::now();
        let answer: Result<Value, StoreError> =
            match self.pool.next().custom(evalsha(), command.clone()).await {
                // After a Redis restart or SCRIPT FLUSH the scripts are gone; a refused call
                // did nothing, so it is safe to send again.
                Err(e) if e.details().starts_with("NOSCRIPT") => match self.reload().await {
                    Ok(()) => self
                        .pool
                        .next()
                        .custom(evalsha(), command)
                        .await
                        .map_err(redis_error),
                    Err(e) => Err(e),
                },
                result => result.map_err(redis_error),
            };
        // Failures are timed too: the slow calls are the ones that time out.
        let (ok, failed) = &self.timings[script as usize];
        match &answer {
            Ok(_) => ok.record(started.elapsed()),
            Err(_) => failed.record(started.elapsed()),
        }
        answer?.convert().map_err(redis_error)
    }
}
