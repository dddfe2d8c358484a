//! The API request flow: a prediction request of the HTTP API → the bugs (Bugzilla) or the
//! push (hg.mozilla.org) → one model → the answers, as effects that store them where the
//! web side finds them (the cache keys are bugbug's).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::scoring::score_commits;
use super::{Finding, MAX_LISTED, Pipeline, filter};
use crate::clients::hg;
use crate::effects::Effect;
use crate::error::{Action, Stage, StageError};
use crate::events::request::PredictionRequest;
use crate::message::Message;
use crate::models::{Input, ModelKind};
use crate::score::{RequestScore, Score};

/// The store key of the API's answer for `bug` by `model`.
pub fn cache_key_of_bug(model: ModelKind, bug: u64) -> String {
    format!("classify_bug:{}_{bug}", model.name())
}

/// The store key of the API's answer for the push of `rev` on `branch`.
pub fn cache_key_of_push(branch: &str, rev: &str) -> String {
    format!("push_risk:{branch}_{rev}")
}

fn answer(key: String, answer: Value, last_change_time: Option<&str>) -> Effect {
    Effect::ApiAnswer {
        key,
        answer,
        last_change_time: last_change_time.map(str::to_owned),
    }
}

impl Pipeline {
    /// A live worker has the store (`bugflow run` refuses to start one without it); a
    /// replay has none, and its answers are the results it publishes.
    pub(super) async fn request(
        &self,
        request: &PredictionRequest,
        message: &Message,
    ) -> Result<Finding, StageError> {
        let stored = message.enrichment.as_deref();
        match request {
            PredictionRequest::Bugs { model, bugs } => {
                let stored = stored.and_then(|e| e.bugs.as_deref());
                self.classify(model, bugs, stored).await
            }
            PredictionRequest::PushRisk { branch, rev } => {
                let url = hg::changeset_url(&self.hg_url, branch, rev);
                let stored = super::enrich::stored_answer(message, &url);
                self.push_risk(branch, rev, &url, stored).await
            }
        }
    }

    /// `POST /<model>/predict/batch`: every bug Bugzilla shows gets the model's answer; the
    /// others `{"available": false}`. The bugs are those `stored` with the message (an
    /// archive line's), or Bugzilla's.
    async fn classify(
        &self,
        name: &str,
        bugs: &[u64],
        stored: Option<&[Value]>,
    ) -> Result<Finding, StageError> {
        let model = ModelKind::parse(name)
            .filter(|m| m.input() == Input::Bug)
            .ok_or_else(|| StageError::invalid(Stage::Models, format!("no bug model {name:?}")))?;
        let bundle = self.models.get(model).ok_or_else(|| {
            StageError::transient(Stage::Models, format!("{model} has no serving bundle yet"))
        })?;
        let fetched;
        let found = match (stored, &self.bugzilla) {
            (Some(stored), _) => stored,
            (None, _) if self.offline => {
                return Err(StageError::skip(
                    Stage::Enrich,
                    format!(
                        "offline: no stored bugs for the request of {} bugs",
                        bugs.len()
                    ),
                ));
            }
            (None, Some(client)) => {
                fetched = client.bugs(bugs).await?;
                &fetched
            }
            (None, None) => {
                return Err(StageError::invalid(
                    Stage::Enrich,
                    "prediction requests need a Bugzilla client",
                ));
            }
        };
        let shown = by_id(found);
        let (mut effects, mut answers) = (Vec::new(), Vec::new());
        for &id in bugs {
            let key = cache_key_of_bug(model, id);
            let Some(&rest) = shown.get(&id) else {
                effects.push(answer(key, json!({"available": false}), None));
                answers.push(json!({"bug_id": id, "available": false}));
                continue;
            };
            // Bugzilla showed it (the key may see security bugs), but nobody else may:
            // answered as unavailable, and not listed in the published result.
            if filter::is_private(rest) {
                effects.push(answer(key, json!({"available": false}), None));
                continue;
            }
            let given = match self.score_model(model, rest) {
                Score::Bug(scored) => scored.bugbug_answer(),
                // The bundle gives no answer (an untrained one, say): unavailable, and why.
                not => {
                    effects.push(answer(key, json!({"available": false}), None));
                    let why = not.skipped().unwrap_or("the model gave no bug score");
                    answers.push(json!({"bug_id": id, "available": false, "reason": why}));
                    continue;
                }
            };
            answers.push(json!({"bug_id": id, "class": given["class"]}));
            effects.push(answer(key, given, rest["last_change_time"].as_str()));
        }
        let available = answers.iter().filter(|a| a.get("class").is_some()).count();
        answers.truncate(MAX_LISTED);
        Ok(Finding {
            subject: format!("{}.{}", model.name(), bugs[0]),
            event: "predict".into(),
            identity: format!("{model}#{bugs:?}"),
            data: json!({"model": model.name(), "bugs": bugs.len(), "available": available, "answers": answers}),
            models: vec![Score::Request(RequestScore {
                model,
                version: bundle.manifest.version.clone(),
            })],
            shadow: Vec::new(),
            effects,
        })
    }

    /// `GET /push/<branch>/<rev>/risk`: the push holding `rev` (its json-pushes answer at
    /// `url`: the one `stored` with the message, or hg.mozilla.org's; a refusal, stored or
    /// not, is an unavailable answer), scored commit by commit.
    async fn push_risk(
        &self,
        branch: &str,
        rev: &str,
        url: &str,
        stored: Option<Result<&Value, hg::HgError>>,
    ) -> Result<Finding, StageError> {
        let key = cache_key_of_push(branch, rev);
        let model = ModelKind::COMMIT_RISK;
        let bundle = self.models.get(model).ok_or_else(|| {
            StageError::transient(Stage::Models, "commit-risk has no serving bundle yet")
        })?;
        let details = match (stored, &self.hg) {
            (Some(answer), _) => answer.and_then(hg::parse_changeset_value),
            (None, _) if self.offline => {
                return Err(StageError::skip(
                    Stage::Enrich,
                    format!("offline: no stored json-pushes answer for revision {rev}"),
                ));
            }
            (None, Some(source)) => source
                .fetch_changeset(url)
                .await
                .and_then(|body| hg::parse_changeset_answer(&body)),
            (None, None) => {
                return Err(StageError::invalid(
                    Stage::Enrich,
                    "push risk needs hg.enabled = true",
                ));
            }
        };
        let mut data = json!({"branch": branch, "rev": rev});
        let (scored, given) = match details {
            Ok(details) => {
                data["push_id"] = json!(details.pushid);
                data["user"] = json!(details.user);
                let scored = score_commits(&bundle, &details, &mut data);
                let given = push_answer(&scored, &data, details.pushid, &bundle.manifest.version);
                (scored, given)
            }
            // hg does not know the revision (404): answer so, do not retry.
            Err(e) if e.action() == Action::Skip => (
                Score::not_scored(model, e.to_string()),
                json!({"available": false, "reason": e.to_string()}),
            ),
            Err(e) => return Err(e.into()),
        };
        Ok(Finding {
            subject: format!("{}.{rev}", branch.replace('/', "-")),
            event: "push-risk".into(),
            identity: key.clone(),
            data,
            models: vec![scored],
            shadow: Vec::new(),
            effects: vec![answer(key, given, None)],
        })
    }
}

/// The answer of `GET /push/<branch>/<rev>/risk`.
fn push_answer(scored: &Score, data: &Value, pushid: u64, version: &str) -> Value {
    let (risk, class, riskiest) = match scored {
        Score::Push(p) => (p.push_risk, p.class.clone(), p.riskiest.clone()),
        _ => (None, None, None),
    };
    json!({
        "push_id": pushid,
        "risk": risk,
        "class": class,
        "riskiest": riskiest,
        "commits": data["commits"],
        "extra_data": {"model": scored.model(), "version": version},
    })
}

/// The bugs shown, by id, to be looked up once each (a request asks for up to 1,000): the
/// first one shown of an id, were it shown twice.
fn by_id(shown: &[Value]) -> HashMap<u64, &Value> {
    let mut by_id = HashMap::with_capacity(shown.len());
    for bug in shown {
        if let Some(id) = bug["id"].as_u64() {
            by_id.entry(id).or_insert(bug);
        }
    }
    by_id
}
