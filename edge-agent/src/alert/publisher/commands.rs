//! The centres' commands (`{base}/commands/{ack,resolve,set,reference}`):
//! bounded before they are read (rate per topic, size, retained), parsed
//! with every string field within its limit, run or handed to the manager
//! as a [`Request`], and answered exactly once on `{base}/replies`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alleywatch_contract::reply::Reply;
use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::{State, Write};
use crate::alert::ledger::{MAX_BY_CHARS, MAX_NOTE_CHARS};
use crate::control::{Change, Request, REQUEST_QUEUE};

/// Largest command payload, in bytes. A `set` of a whole lane is under
/// 1 KiB; anything far larger is a mistake or an attack, refused unread.
pub(crate) const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Commands waiting for the manager's answer at once (a `reference` waits
/// for the camera's next frame, which a stalled camera never has).
const MAX_PENDING: usize = 16;
/// How long a command waits for the manager's answer before its reply says so.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Rate limit of each command topic: a burst of this many…
pub(crate) const RATE_BURST: f64 = 10.0;
/// …then this many per second.
pub(crate) const RATE_PER_S: f64 = 2.0;
/// Longest `request_id`, in characters.
const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest `event_id`, `camera` and `lane`, in characters.
const MAX_NAME_CHARS: usize = 64;

/// The bounds on the centres' commands: a token bucket per command topic
/// and the count of commands waiting for the manager's answer.
#[derive(Default)]
pub(super) struct Commands {
    /// Command → (tokens, last refill, refusing since the last allowed one).
    buckets: HashMap<&'static str, (f64, Instant, bool)>,
    pending: Arc<AtomicUsize>,
}

impl Commands {
    /// Takes a token of `command`'s bucket. `Err(first)`: refused, `first`
    /// when it is the first refusal since the last allowed command (logged
    /// once, not once per message of a flood).
    fn take(&mut self, command: &'static str, now: Instant) -> Result<(), bool> {
        let (tokens, at, refusing) = self.buckets.entry(command).or_insert((RATE_BURST, now, false));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * RATE_PER_S).min(RATE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            *refusing = false;
            Ok(())
        } else {
            Err(!std::mem::replace(refusing, true))
        }
    }
}

/// The command named by a topic's last level, as a bounded label.
fn command_name(name: &str) -> &'static str {
    match name {
        "ack" => "ack",
        "resolve" => "resolve",
        "set" => "set",
        "reference" => "reference",
        _ => "unknown",
    }
}

impl State {
    /// Handles a message on the commands topic; returns the reply to publish
    /// now (`set` and `reference` reply later, once the manager answers).
    /// Every command gets exactly one reply. Before it is read, a command is
    /// refused when its topic is over its rate, when it is larger than
    /// [`MAX_COMMAND_BYTES`], or when it is retained: a retained command
    /// would run again after every reconnect.
    pub(super) fn on_command(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        requests: &mpsc::Sender<Request>,
        reply_tx: &mpsc::Sender<Value>,
    ) -> Option<Value> {
        let prefix = format!("{}/commands/", self.topics.base());
        let name = topic.strip_prefix(&prefix)?;
        let label = command_name(name);
        // An unknown name is echoed, but never at any length.
        let command: String =
            if label == "unknown" { name.chars().take(MAX_NAME_CHARS).collect() } else { name.into() };
        let m = self.outbox.metrics().clone();
        if let Err(first) = self.commands.take(label, Instant::now()) {
            let e = format!(
                "rate limit: at most {RATE_BURST} at once and {RATE_PER_S} per s on commands/{command}; refused, send it again later"
            );
            if first {
                tracing::warn!(command = %command, "commands over the rate limit are refused (logged once per burst)");
            }
            // One reply per burst, not one per message: a flood answered
            // message for message would fill the client's queue that
            // alerts need. The rest are counted.
            let reply = self.refuse(&command, &Value::Null, "rate_limited", e, &m, false);
            return first.then_some(reply);
        }
        if payload.len() > MAX_COMMAND_BYTES {
            let e = format!(
                "payload of {} bytes refused unread: a command is at most {MAX_COMMAND_BYTES} bytes",
                payload.len()
            );
            return Some(self.refuse(&command, &Value::Null, "too_large", e, &m, true));
        }
        let parsed: Result<Value, String> = match serde_json::from_slice(payload) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err("payload must be a JSON object".into()),
            Err(e) => Err(format!("payload is not JSON: {e}")),
        };
        if retain {
            let e = "retained commands are refused, never run: the broker delivers a retained message again on \
                     every (re)connect, so it would run again each time; publish commands with retain = false, and \
                     clear this one (publish an empty retained message to its topic)"
                .to_string();
            let body = parsed.unwrap_or(Value::Null);
            return Some(self.refuse(&command, &body, "retained", e, &m, true));
        }
        let body = match parsed {
            Ok(b) => b,
            Err(e) => return Some(self.reply(&command, &Value::Null, Err(e), &m)),
        };
        let result: Result<(), String> = match label {
            "ack" => (|| {
                let (id, by) = (need(&body, &command, "event_id")?, need(&body, &command, "by")?);
                let note = field(&body, &command, "note")?;
                field(&body, &command, "request_id")?;
                self.outbox.ledger().ack(&id, &by, note).map_err(|e| format!("{command}: {e}"))?;
                tracing::info!(id = %id, by = %by, "event acknowledged");
                Ok(())
            })(),
            "resolve" => (|| {
                let (id, by) = (need(&body, &command, "event_id")?, need(&body, &command, "by")?);
                field(&body, &command, "request_id")?;
                let end = self.outbox.ledger().resolve(&id, &by).map_err(|e| format!("{command}: {e}"))?;
                tracing::info!(id = %id, by = %by, "event resolved by the centre");
                // Stored (with its fsync) on the blocking write thread, like
                // every other write of this task.
                self.writes.push(Write::Events(vec![end]));
                Ok(())
            })(),
            "set" | "reference" => match change_of(&command, &body) {
                Err(e) => Err(e),
                Ok((by, change)) => match self.ask(&command, by, change, &body, requests, reply_tx) {
                    Ok(()) => return None,
                    Err((reason, e)) => {
                        if let Some(reason) = reason {
                            m.commands_refused.with_label_values(&[reason]).inc();
                        }
                        Err(e)
                    }
                },
            },
            _ => Err(format!("unknown command {command:?} (known: ack, resolve, set, reference)")),
        };
        Some(self.reply(&command, &body, result, &m))
    }

    /// Hands a change to the manager; a task publishes the reply once it
    /// answers (or after [`ANSWER_TIMEOUT`]). Refused as busy when the
    /// queue is full or too many commands already wait for an answer.
    fn ask(
        &mut self,
        command: &str,
        by: String,
        change: Change,
        body: &Value,
        requests: &mpsc::Sender<Request>,
        reply_tx: &mpsc::Sender<Value>,
    ) -> Result<(), (Option<&'static str>, String)> {
        let busy = |what: String| (Some("busy"), format!("{command}: busy: {what}; send it again later"));
        let pending = self.commands.pending.clone();
        if pending.load(Ordering::Relaxed) >= MAX_PENDING {
            return Err(busy(format!("{MAX_PENDING} commands are already waiting for an answer")));
        }
        let (tx, rx) = oneshot::channel();
        match requests.try_send(Request { change, by, reply: tx }) {
            Err(TrySendError::Full(_)) => return Err(busy(format!("{REQUEST_QUEUE} changes are already queued"))),
            Err(TrySendError::Closed(_)) => return Err((None, format!("{command}: the agent is stopping"))),
            Ok(()) => {}
        }
        pending.fetch_add(1, Ordering::Relaxed);
        let m = self.outbox.metrics().clone();
        let (reply_tx, body, command) = (reply_tx.clone(), body.clone(), command.to_string());
        tokio::spawn(async move {
            let result = match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("{command}: no answer")),
                Err(_) => Err(format!("{command}: no answer within {} s", ANSWER_TIMEOUT.as_secs())),
            };
            let label = if result.is_ok() { "ok" } else { "error" };
            m.commands.with_label_values(&[&command, label]).inc();
            if let Err(e) = &result {
                tracing::warn!(command = %command, error = %e, "command rejected");
            }
            let _ = reply_tx.send(reply_body(&command, &body, result)).await;
            pending.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(())
    }

    /// A command refused unread (`reason`: a `commands_refused` label).
    fn refuse(
        &self,
        command: &str,
        body: &Value,
        reason: &'static str,
        error: String,
        m: &crate::metrics::Metrics,
        log: bool,
    ) -> Value {
        m.commands_refused.with_label_values(&[reason]).inc();
        m.commands.with_label_values(&[command_name(command), "error"]).inc();
        if log {
            tracing::warn!(command, reason, "command refused");
        }
        reply_body(command, body, Err(error))
    }

    fn reply(&self, command: &str, body: &Value, result: Result<(), String>, m: &crate::metrics::Metrics) -> Value {
        let label = if result.is_ok() { "ok" } else { "error" };
        m.commands.with_label_values(&[command_name(command), label]).inc();
        if let Err(e) = &result {
            tracing::warn!(command, error = %e, "command rejected");
        }
        reply_body(command, body, result)
    }
}

/// The longest a command's string `field` may be, in characters.
fn max_chars(field: &str) -> usize {
    match field {
        "note" => MAX_NOTE_CHARS,
        "by" => MAX_BY_CHARS,
        "request_id" => MAX_REQUEST_ID_CHARS,
        _ => MAX_NAME_CHARS,
    }
}

/// An optional string field of a command, within its length limit.
fn field(body: &Value, command: &str, k: &str) -> Result<Option<String>, String> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let (got, max) = (s.chars().count(), max_chars(k));
            if got > max {
                return Err(format!("{command}: field {k:?}: {got} characters, at most {max}"));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(format!("{command}: field {k:?} must be a string")),
    }
}

/// A required string field of a command, within its length limit.
fn need(body: &Value, command: &str, k: &str) -> Result<String, String> {
    field(body, command, k)?.ok_or_else(|| format!("{command}: field {k:?} (a string) is required"))
}

/// The change a `set` or `reference` command asks for, and who asks.
fn change_of(command: &str, body: &Value) -> Result<(String, Change), String> {
    let by = need(body, command, "by")?;
    field(body, command, "request_id")?;
    let change = if command == "set" {
        Change::Set(
            body.get("changes")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| "set: field \"changes\" (an object of key path → value) is required".to_string())?,
        )
    } else {
        Change::Reference { camera: need(body, command, "camera")?, lane: field(body, command, "lane")? }
    };
    Ok((by, change))
}

/// The reply on `{base}/replies`: which command, for which event or
/// request, and whether it took effect.
/// Echoed fields are strings within their limits, or null.
fn reply_body(command: &str, body: &Value, result: Result<(), String>) -> Value {
    let echo = |k: &str| body.get(k).and_then(Value::as_str).filter(|s| s.chars().count() <= max_chars(k));
    let reply = Reply {
        command: command.into(),
        request_id: echo("request_id").map(Into::into),
        event_id: echo("event_id").map(Into::into),
        by: echo("by").map(Into::into),
        ok: result.is_ok(),
        error: result.err(),
        at: SystemTime::now(),
    };
    serde_json::to_value(reply).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
