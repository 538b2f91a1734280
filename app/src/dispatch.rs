//! The outbox's chores: `outbox-dispatcher` sends what is due (webhooks to their endpoints,
//! emails to the mail sink) every `outbox.poll_ms`, round after round while there is a backlog;
//! `outbox-purge` removes delivered messages older than `outbox.retention_hours`. They run
//! where the outbox is written: a process running notify (emails) or the projector (webhooks).

use crate::backends::Backends;
use crate::config::Config;
use crate::error::AppError;
use crate::supervisor::Chore;
use orderflow_stages::deliver::{Dispatcher, MailSink};
use std::sync::Arc;
use std::time::Duration;

/// The longest a dispatcher run goes on while rounds come back full; the next run follows
/// after `outbox.poll_ms`, and shutdown never waits for more than one round.
const BACKLOG_BUDGET: Duration = Duration::from_secs(1);

/// The dispatcher and the purge over `backends`' outbox.
pub fn chores(config: &Config, backends: &Backends) -> Result<Vec<Chore>, AppError> {
    let mail = MailSink::new(config.outbox.mail_dir(&config.store_dir()));
    let dispatcher = Arc::new(
        Dispatcher::new(
            backends.outbox.clone(),
            backends.webhooks.clone(),
            Some(mail),
            config.webhook.policy(),
            config.webhook.timeout(),
        )
        .map_err(|e| AppError::Usage(format!("cannot deliver webhooks: {e}")))?,
    );
    orderflow_stages::deliver::register_metrics();
    let sender = dispatcher.clone();
    let dispatch = Chore::new(
        "outbox-dispatcher",
        Duration::from_millis(config.outbox.poll_ms),
        move || {
            let sender = sender.clone();
            async move {
                // A store hiccup delays deliveries; it does not stop the process.
                if let Err(e) = sender.deliver_backlog(BACKLOG_BUDGET).await {
                    tracing::warn!(error = %e, "Cannot read or update the outbox; retrying");
                }
                Ok(())
            }
        },
    );
    let purge = crate::retention::outbox_chore(backends.outbox.clone(), config.outbox.retention());
    Ok(vec![dispatch, purge])
}
