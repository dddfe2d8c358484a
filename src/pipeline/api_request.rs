//! The API request flow: a prediction request of the HTTP API → the bugs (Bugzilla) or the
//! push (hg.mozilla.org) → one model → the answers, as effects that store them where the
//! web side finds them (the cache keys are bugbug's).

use serde_json::{Value, json};

use super::scoring::score_commits;
use super::{Finding, MAX_LISTED, Pipeline, filter};
use crate::effects::Effect;
use crate::error::{Action, Stage, StageError};
use crate::events::request::PredictionRequest;
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
    pub(super) async fn request(&self, request: &PredictionRequest) -> Result<Finding, StageError> {
        if self.effects.store.is_none() {
            return Err(StageError::invalid(
                Stage::Sink,
                "prediction requests need the store (bugflow run)",
            ));
        }
        match request {
            PredictionRequest::Bugs { model, bugs } => self.classify(model, bugs).await,
            PredictionRequest::PushRisk { branch, rev } => self.push_risk(branch, rev).await,
        }
    }

    /// `POST /<model>/predict/batch`: every bug Bugzilla shows gets the model's answer; the
    /// others `{"available": false}`.
    async fn classify(&self, name: &str, bugs: &[u64]) -> Result<Finding, StageError> {
        let model = ModelKind::parse(name)
            .filter(|m| m.input() == Input::Bug)
            .ok_or_else(|| StageError::invalid(Stage::Models, format!("no bug model {name:?}")))?;
        let bundle = self.models.get(model).ok_or_else(|| {
            StageError::transient(Stage::Models, format!("{model} has no serving bundle yet"))
        })?;
        let client = self.bugzilla.as_ref().ok_or_else(|| {
            StageError::invalid(Stage::Enrich, "prediction requests need a Bugzilla client")
        })?;
        let found = client.bugs(bugs).await?;
        let (mut effects, mut answers) = (Vec::new(), Vec::new());
        for &id in bugs {
            let key = cache_key_of_bug(model, id);
            let Some(rest) = found.iter().find(|b| b["id"].as_u64() == Some(id)) else {
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
            let scored = self.score_model(model, rest);
            let given = scored
                .as_bug()
                .map(|s| s.bugbug_answer())
                .unwrap_or_else(|| json!({"available": false}));
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

    /// `GET /push/<branch>/<rev>/risk`: the push holding `rev`, scored commit by commit.
    async fn push_risk(&self, branch: &str, rev: &str) -> Result<Finding, StageError> {
        let key = cache_key_of_push(branch, rev);
        let model = ModelKind::COMMIT_RISK;
        let bundle = self.models.get(model).ok_or_else(|| {
            StageError::transient(Stage::Models, "commit-risk has no serving bundle yet")
        })?;
        let source = self.hg.as_ref().ok_or_else(|| {
            StageError::invalid(Stage::Enrich, "push risk needs hg.enabled = true")
        })?;
        let mut data = json!({"branch": branch, "rev": rev});
        let (scored, given) = match source.push_of(&self.hg_url, branch, rev).await {
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
