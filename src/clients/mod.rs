//! The HTTP services bugflow reads from (and, for Bugzilla, writes to).
//!
//! * [`bugzilla`] — BMO's REST API: bugs with comments and history, searches, updates;
//! * [`hg`] — hg.mozilla.org's json-pushes: a push's changesets.
//!
//! Each client fails with a typed error ([`bugzilla::BugzillaError`], [`hg::HgError`]) whose
//! `action()` says what the message should do: retry, dead-letter or skip. The error becomes
//! a [`StageError`](crate::error::StageError) at the stage boundary, keeping it as source;
//! nothing anywhere decides by reading an error's text.

pub mod bugzilla;
pub mod hg;

/// Why a response body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the cap: the service answered more than any real answer holds.
    TooLarge,
    /// The connection broke while reading.
    Broken(reqwest::Error),
}

/// Reads a response body chunk by chunk, refusing it past `max` bytes (a body is never
/// buffered whole before its size is known).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
