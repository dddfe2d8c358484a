//! What a consumer does not score, and why: each rule a skip with its reason.

use crate::consumer::ConsumerSpec;
use crate::error::{Stage, StageError};
use crate::events::hgpush::{Changegroup, HgPushEvent, PushlogPush};

/// The changegroup of an hg push event, or why the push is skipped: another event type,
/// a repository the consumer does not follow, no pushlog entry, a pusher in `skip_users`.
pub fn push<'a>(
    spec: &ConsumerSpec,
    event: &'a HgPushEvent,
) -> Result<(&'a Changegroup, &'a PushlogPush), StageError> {
    let push = match event {
        HgPushEvent::Changegroup(push) => push,
        other => {
            return Err(StageError::skip(
                Stage::Decode,
                format!("{} carries no changesets to score", other.kind()),
            ));
        }
    };
    let repo = push.repo();
    if !spec.repos.is_empty() && !spec.repos.iter().any(|r| r == repo) {
        return Err(StageError::skip(
            Stage::Decode,
            format!("repository {repo} is not in this consumer's repos"),
        ));
    }
    let Some(entry) = push.push() else {
        return Err(StageError::skip(
            Stage::Decode,
            format!("push to {repo} has no pushlog entry"),
        ));
    };
    if spec.skip_users.contains(&entry.user) {
        return Err(StageError::skip(
            Stage::Decode,
            format!("pusher {} is in skip_users", entry.user),
        ));
    }
    Ok((push, entry))
}

/// Is this bug (REST shape) private: flagged so, or in any security group? The one check
/// every path uses (bug events, API requests, the cache warm-up, the writer): a private bug
/// is never scored, published, answered or shown.
pub fn is_private(bug: &serde_json::Value) -> bool {
    bug["is_private"].as_bool() == Some(true)
        || bug["groups"].as_array().is_some_and(|g| !g.is_empty())
}

/// All that is kept of a private bug: its id, and that it is private.
pub fn private_stub(id: impl serde::Serialize) -> serde_json::Value {
    serde_json::json!({"id": id, "is_private": true})
}

/// A private bug is never read, scored or written: the skip and its reason.
pub fn private_bug(id: u64) -> StageError {
    StageError::skip(
        Stage::Decode,
        format!("bug {id} is private: bugflow never reads or writes it"),
    )
}

/// A body over `max` bytes is never read: dead-lettered as too large.
pub fn body_size(bytes: usize, max: usize) -> Result<(), StageError> {
    if bytes > max {
        return Err(StageError::invalid(
            Stage::Decode,
            format!("too large: {bytes} bytes (amqp.max_body_bytes = {max})"),
        ));
    }
    Ok(())
}
