//! Customer emails: the confirmation notify renders into the outbox, and the sink that takes
//! it as a mail sender would (one RFC 5322 message file per email; no SMTP here).

use chrono::{DateTime, Utc};
use orderflow_domain::Order;
use orderflow_stores::Delivery;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The email's template name, and its event in the outbox.
pub const CONFIRMATION: &str = "order_shipped";

/// Keeps a value safe inside a header: letters, digits and `.-_@+` only.
fn header_safe(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The shipping confirmation for `order` as an RFC 5322 message (plain text, UTF-8). The
/// customer's address is left to the mail sender, which knows it: `To` names the customer id.
pub fn render_confirmation(order: &Order, now: DateTime<Utc>) -> String {
    let customer = header_safe(&order.customer_id);
    let mut body = format!("Hello,\r\n\r\nyour order {} has shipped.\r\n\r\n", order.id);
    for line in &order.lines {
        body.push_str(&format!("  {} x {}\r\n", line.quantity, line.sku));
    }
    if let Some(pricing) = &order.pricing {
        body.push_str(&format!("\r\nTotal: {}\r\n", pricing.total));
    }
    if let Some(shipment) = &order.shipment {
        body.push_str(&format!(
            "Carrier: {}\r\nTracking number: {}\r\n",
            shipment.carrier, shipment.tracking_number
        ));
    }
    body.push_str("\r\nThank you for your order.\r\n");
    format!(
        "Message-ID: <{id}.{CONFIRMATION}@orderflow>\r\n\
         Date: {date}\r\n\
         From: orderflow <no-reply@orderflow.invalid>\r\n\
         To: customer {customer} <{customer}@customers.invalid>\r\n\
         Subject: Your order {id} has shipped\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         X-Orderflow-Order: {id}\r\n\
         X-Orderflow-Customer: {customer}\r\n\
         \r\n{body}",
        id = order.id,
        date = now.to_rfc2822(),
    )
}

/// A directory a mail sender takes messages from: one `<message id>.eml` file per email,
/// written whole (a temporary file, synced, then renamed), so a reader never sees half of one.
#[derive(Debug, Clone)]
pub struct MailSink {
    dir: PathBuf,
}

impl MailSink {
    /// A sink writing into `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Writes a round's emails, synced together (see `write_files`): one result per message,
    /// in order.
    pub async fn write_all(&self, messages: &[Delivery]) -> Vec<Result<(), String>> {
        let dir = self.dir.clone();
        let files: Vec<(String, String)> = messages
            .iter()
            .map(|m| (format!("{}.eml", header_safe(&m.id)), m.payload.clone()))
            .collect();
        let count = files.len();
        let shown = self.dir.display().to_string();
        match tokio::task::spawn_blocking(move || write_files(&dir, &files)).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| format!("cannot write to {shown}: {e}")))
                .collect(),
            Err(e) => vec![Err(format!("the mail writer stopped: {e}")); count],
        }
    }
}

/// The blocking part of [`MailSink::write_all`]: every file written under a temporary name,
/// all made durable at once, renamed into place, and the renames made durable at once.
fn write_files(dir: &Path, files: &[(String, String)]) -> Vec<std::io::Result<()>> {
    let fail_all = |e: &std::io::Error| -> Vec<std::io::Result<()>> {
        files
            .iter()
            .map(|_| Err(std::io::Error::new(e.kind(), e.to_string())))
            .collect()
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail_all(&e);
    }
    let staged: Vec<std::io::Result<(std::fs::File, PathBuf)>> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(format!(".{name}.tmp"));
            let mut file = std::fs::File::create(&path)?;
            file.write_all(text.as_bytes())?;
            Ok((file, path))
        })
        .collect();
    let written: Vec<&std::fs::File> = staged.iter().flatten().map(|(f, _)| f).collect();
    if let Err(e) = sync_files(dir, &written) {
        return fail_all(&e);
    }
    let results: Vec<std::io::Result<()>> = staged
        .into_iter()
        .zip(files)
        .map(|(staged, (name, _))| {
            let (_, path) = staged?;
            std::fs::rename(&path, dir.join(name))
        })
        .collect();
    match std::fs::File::open(dir).and_then(|d| sync_files(dir, &[&d])) {
        Ok(()) => results,
        Err(e) => fail_all(&e),
    }
}

/// Makes `files` in `dir` durable: on Linux with one `syncfs` of their file system (one
/// flush for a whole round instead of one per email, which on a file system without a
/// journal is one device write each), elsewhere file by file.
#[cfg(target_os = "linux")]
fn sync_files(dir: &Path, files: &[&std::fs::File]) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    rustix::fs::syncfs(std::fs::File::open(dir)?).map_err(std::io::Error::from)
}

/// Makes `files` durable, one by one.
#[cfg(not(target_os = "linux"))]
fn sync_files(_dir: &Path, files: &[&std::fs::File]) -> std::io::Result<()> {
    files.iter().try_for_each(|f| f.sync_all())
}
