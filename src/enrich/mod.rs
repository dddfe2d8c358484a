//! Enrichment: what a message does not carry, fetched from the service that knows.
//!
//! * [`hg`] — a push's changesets from hg.mozilla.org (`json-pushes?version=2&full=1`).

pub mod bugzilla;
pub mod hg;
