//! Where results go, and where messages that cannot be processed go.
//!
//! * [`results`] — the results exchange, with publisher confirms;
//! * [`dead_letter`] — the dead-letter exchange, with the reason in a header;
//! * [`retry`] — each consumer's retry queue, where a transient failure waits for its next try;
//! * [`jsonl`] — a JSON Lines file (or stdout), one result per line;
//! * [`archive`] — an archive of the messages a consumer settled, with what it fetched.

pub mod archive;
pub mod dead_letter;
pub mod jsonl;
pub mod results;
pub mod retry;
