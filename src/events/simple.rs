//! The legacy `exchange/bugzilla/simple` body: `{"id": <bug>, "delta_ts": <time>}`.
//!
//! BMO stopped publishing it in 2023, but a relay (or an old archive) may still produce it.
//! mozillapulse wrapped it in the `{payload, _meta}` envelope; a bare object is accepted too.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Stage, StageError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleBug {
    pub id: u64,
    pub delta_ts: String,
}

pub fn decode(body: &[u8]) -> Result<SimpleBug, StageError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("simple bug: not JSON: {e}")))?;
    let inner = value.get("payload").cloned().unwrap_or(value);
    // Old publishers sent the id as a string now and then.
    let id = match inner.get("id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
    .ok_or_else(|| StageError::invalid(Stage::Decode, "simple bug: no positive `id`"))?;
    let delta_ts = match inner.get("delta_ts") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(StageError::invalid(
                Stage::Decode,
                "simple bug: no `delta_ts`",
            ));
        }
    };
    Ok(SimpleBug { id, delta_ts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enveloped_and_bare_bodies_decode_alike() {
        let a =
            decode(br#"{"payload": {"id": 1234, "delta_ts": "2023-01-01 10:00:00"}, "_meta": {}}"#)
                .unwrap();
        let b = decode(br#"{"id": "1234", "delta_ts": "2023-01-01 10:00:00"}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_missing_id_is_invalid() {
        assert!(decode(br#"{"delta_ts": "x"}"#).is_err());
        assert!(decode(br#"{"id": 0, "delta_ts": "x"}"#).is_err());
    }
}
