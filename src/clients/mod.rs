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
