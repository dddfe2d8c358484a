//! Errors that say what to do next.
//!
//! Every stage of a message's path (decode, enrich, features, models, sinks) fails with a
//! [`StageError`]. The error carries an [`Action`]: the runner does not guess from the error
//! text whether to retry, dead-letter or skip — the stage that failed decides, because it is
//! the one that knows whether the input or the world is at fault (the idea of Arroyo's
//! `RetryHint`).

use std::sync::Arc;

crate::named_enum! {
    /// What the runner should do with a message whose processing failed.
    pub enum Action {
        /// The world is at fault (5xx, timeout, 429, unconfirmed publish): try again later.
        Retry = "retry",
        /// The input is at fault (undecodable, invalid): it will never succeed, park it in
        /// the dead-letter queue with the reason.
        DeadLetter = "dead_letter",
        /// Nothing to do for this input (private bug, unknown message type): ack and record
        /// why.
        Skip = "skip",
        /// Nothing can be processed until an operator acts (Bugzilla revoked the API key):
        /// the message stays queued, the consumer stops taking messages, `/readyz` says why.
        Halt = "halt",
    }
}

crate::named_enum! {
    /// The stage of the pipeline an error came from; it goes into logs, metrics and the
    /// dead-letter header so that an operator knows where to look.
    pub enum Stage {
        Decode = "decode",
        Enrich = "enrich",
        Features = "features",
        Models = "models",
        Sink = "sink",
        /// Somewhere in the pipeline or its effects: processing panicked.
        Pipeline = "pipeline",
    }
}

/// The longest reason kept, in bytes. Reasons quote input (a serde message names the bad
/// value); a long one in the `x-bugflow-reason` header would make RabbitMQ close the
/// publisher's connection (`frame_too_large`), so reasons are cut here, where they are made.
pub const MAX_REASON: usize = 1024;

/// `reason`, cut to [`MAX_REASON`] bytes at a character boundary, saying how long it was.
fn bounded(mut reason: String) -> String {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let total = reason.len();
    let mut end = MAX_REASON - 40;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str(&format!("… (cut; {total} bytes in all)"));
    reason
}

/// A failure of one stage, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {reason} (action: {action})")]
pub struct StageError {
    pub stage: Stage,
    pub action: Action,
    pub reason: String,
    /// The typed error this one was made from (a client's), for logs and callers that
    /// need its details.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StageError {
    pub fn new(stage: Stage, action: Action, reason: impl Into<String>) -> Self {
        StageError {
            stage,
            action,
            reason: bounded(reason.into()),
            source: None,
        }
    }

    /// The error of a typed source at `stage`: its text becomes the reason, its
    /// `action` the action.
    pub fn from_source<E>(stage: Stage, action: Action, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StageError {
            stage,
            action,
            reason: bounded(source.to_string()),
            source: Some(Arc::new(source)),
        }
    }

    /// The typed source, if it is an `E`.
    ///
    /// ```
    /// # use bugflow::error::{Stage, StageError, MAX_REASON};
    /// let e = StageError::invalid(Stage::Decode, "x".repeat(300_000));
    /// assert!(e.reason.len() <= MAX_REASON);
    /// ```
    pub fn source_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref()?.downcast_ref::<E>()
    }

    /// The input can never be processed: dead-letter it.
    pub fn invalid(stage: Stage, reason: impl Into<String>) -> Self {
        Self::new(stage, Action::DeadLetter, reason)
    }

    /// Nothing to do: ack and record the reason.
    pub fn skip(stage: Stage, reason: impl Into<String>) -> Self {
        Self::new(stage, Action::Skip, reason)
    }

    /// A transient failure: retry.
    pub fn transient(stage: Stage, reason: impl Into<String>) -> Self {
        Self::new(stage, Action::Retry, reason)
    }
}
