//! The stages between a message and its result: decode → filter → enrich → models, and the
//! effects they plan.
//!
//! One file per flow, chosen by what the message decodes to:
//!
//! | input | flow |
//! |---|---|
//! | an hg push (`exchange/hgpushes/v2`) | [`push`]: its changesets from json-pushes, commit-risk |
//! | a BMO webhook event | [`bug_event`]: the full bug from Bugzilla, every bug model |
//! | a legacy `{id, delta_ts}` | [`simple`]: recorded, not scored |
//! | a prediction request of the HTTP API | [`api_request`]: the bugs or the push, one model |
//!
//! [`filter`] holds the skip rules, [`scoring`] runs the models. A flow only reads; what it
//! wants changed (the store, Bugzilla) it returns as [`Effect`]s, which the effects stage
//! carries out before the result is published. [`Pipeline::plan`] never touches the broker,
//! so the very same code runs under `bugflow run` (AMQP), `bugflow replay` (an archive,
//! in-process), the demo and the tests.

pub mod api_request;
pub mod bug_event;
pub mod enrich;
pub mod filter;
pub mod privacy;
pub mod push;
pub mod scoring;
pub mod simple;

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use crate::clients::bugzilla::Bugzilla;
use crate::clients::hg;
use crate::consumer::ConsumerSpec;
use crate::effects::bugzilla::BugzillaWriter;
use crate::effects::{Effect, Effects, Planned};
use crate::error::StageError;
use crate::events::{self, Event};
use crate::message::Message;
use crate::models::registry::ModelSet;
use crate::result::{InputRef, ResultMessage, stable_id};
use crate::score::Score;
use crate::store::Store;

pub use crate::effects::memory::BOT_LOGIN;
pub use api_request::{cache_key_of_bug, cache_key_of_push};

/// The kind of a shadow bundle's result: its routing key is `<consumer>.shadow.<subject>`.
pub const SHADOW_KIND: &str = "shadow";

/// At most this many commits (or bugs) are listed in a result, so that results stay under
/// Pulse's advised 8 KiB.
pub const MAX_LISTED: usize = 40;

/// One consumer's processing: what it reads from, and the effects stage it plans for.
#[derive(Clone)]
pub struct Pipeline {
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    hg: Option<hg::Source>,
    bugzilla: Option<Bugzilla>,
    /// Where push-risk requests look revisions up (`hg.url`).
    hg_url: String,
    /// Bodies larger than this are dead-lettered unread (`amqp.max_body_bytes`).
    max_body: usize,
    /// What results keep of e-mail addresses (`emails`).
    emails: privacy::Emails,
    effects: Effects,
    /// Never fetch: what a message's stored enrichment lacks is a skip
    /// (`bugflow replay --offline`).
    offline: bool,
}

/// What a flow learned about its subject, before it becomes a result.
pub struct Finding {
    pub subject: String,
    pub event: String,
    /// What identifies the input event, for the stable message id.
    pub identity: String,
    pub data: Value,
    pub models: Vec<Score>,
    /// The shadow bundles' scores (`bugflow models shadow`): published as a result of their
    /// own, on `<consumer>.shadow.<subject>`, and used for nothing else.
    pub shadow: Vec<Score>,
    pub effects: Vec<Effect>,
}

impl Pipeline {
    pub fn new(spec: ConsumerSpec, models: Arc<ModelSet>) -> Self {
        Pipeline {
            spec,
            models,
            hg: None,
            bugzilla: None,
            hg_url: "https://hg.mozilla.org".into(),
            max_body: crate::config::Config::default().amqp.max_body_bytes,
            emails: privacy::Emails::default(),
            effects: Effects::default(),
            offline: false,
        }
    }

    /// Never touch the network: enrichment comes from the message (an archive line's
    /// `enrichment`) or not at all, and a message that needs what it lacks is skipped with
    /// that reason (counted by the replay, never fetched).
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// The bundles this pipeline scores with.
    pub fn models(&self) -> &Arc<ModelSet> {
        &self.models
    }

    /// Score with `models` instead (a replay through other bundles).
    pub fn with_models(mut self, models: Arc<ModelSet>) -> Self {
        self.models = models;
        self
    }

    /// Remember predictions, harvest labels, keep the API's answers (an effect).
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.effects.store = Some(store);
        self
    }

    /// Read each bug event's full bug (comments, history) from Bugzilla before scoring.
    pub fn with_bugzilla(mut self, client: Bugzilla) -> Self {
        self.bugzilla = Some(client);
        self
    }

    /// Write predictions back to Bugzilla (the consumer's `[sinks.bugzilla]`; an effect).
    pub fn with_writer(mut self, writer: BugzillaWriter) -> Self {
        self.effects.writer = Some(writer);
        self
    }

    /// Fetch pushes' changesets from `source` (without it, pushes are not scored).
    pub fn with_hg(mut self, source: hg::Source) -> Self {
        self.hg = Some(source);
        self
    }

    /// Bodies larger than `bytes` are dead-lettered unread.
    pub fn with_emails(mut self, emails: privacy::Emails) -> Self {
        self.emails = emails;
        self
    }

    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Where push-risk requests look revisions up (default `https://hg.mozilla.org`).
    pub fn with_hg_url(mut self, url: &str) -> Self {
        self.hg_url = url.to_owned();
        self
    }

    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The effects stage this pipeline's plans are carried out by.
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Decodes, filters, enriches and scores one message: its result and planned effects.
    /// Reads only; nothing is written anywhere.
    pub async fn plan(&self, message: &Message) -> Result<Planned, StageError> {
        filter::body_size(message.body.len(), self.max_body)?;
        let event = events::decode(self.spec.input, message)?;
        let mut finding = match &event {
            Event::HgPush(push) => self.push(push, message).await?,
            Event::Webhook(webhook) if webhook.bug.is_private => {
                return Ok(bug_event::private(webhook));
            }
            Event::Webhook(webhook) => match self.bug_event(webhook, message).await? {
                Some(finding) => finding,
                // The full bug turned out private (a security group).
                None => return Ok(bug_event::private(webhook)),
            },
            Event::SimpleBug(simple) => self.simple_bug(simple),
            Event::Request(request) => self.request(request, message).await?,
        };
        let effects = std::mem::take(&mut finding.effects);
        let shadow = self.shadow_result(message, &finding);
        Ok(Planned::Publish {
            result: Box::new(self.result(message, finding)),
            effects,
            shadow,
        })
    }

    /// [`plan`](Self::plan), then the effects: the result as it is published (in-process
    /// callers: replay, the demo, tests; [`dispatch`](crate::dispatch) runs the same two).
    pub async fn process(&self, message: &Message) -> Result<Vec<ResultMessage>, StageError> {
        self.effects.apply(self.plan(message).await?).await
    }

    /// The shadow bundles' result: the finding's data under kind `shadow`, so its routing
    /// key is `<consumer>.shadow.<subject>`; none when no shadow scored.
    fn shadow_result(&self, message: &Message, finding: &Finding) -> Option<Box<ResultMessage>> {
        if finding.shadow.is_empty() {
            return None;
        }
        let shadow = Finding {
            subject: finding.subject.clone(),
            event: finding.event.clone(),
            identity: finding.identity.clone(),
            data: finding.data.clone(),
            models: finding.shadow.clone(),
            shadow: Vec::new(),
            effects: Vec::new(),
        };
        Some(Box::new(self.result_as(message, shadow, SHADOW_KIND)))
    }

    fn result(&self, message: &Message, finding: Finding) -> ResultMessage {
        self.result_as(message, finding, &self.spec.kind)
    }

    fn result_as(&self, message: &Message, finding: Finding, kind: &str) -> ResultMessage {
        let consumer = &self.spec.name;
        // Model versions are part of the id: the same input scored by another bundle is
        // another result (replays through a new model are told apart).
        let versions: Vec<&str> = finding.models.iter().filter_map(Score::version).collect();
        let (mut data, mut event) = (finding.data, Value::String(finding.event));
        self.emails.apply(&mut data);
        self.emails.apply(&mut event);
        let event = match event {
            Value::String(event) => event,
            _ => String::new(),
        };
        ResultMessage {
            message_id: stable_id(&[
                consumer,
                kind,
                &finding.subject,
                &finding.identity,
                &versions.join(","),
            ]),
            // A subject from input (a repository path) can make the key longer than AMQP
            // allows: shortened, with a hash, the same way every time.
            routing_key: crate::pulse::short::fit(&format!(
                "{consumer}.{kind}.{}",
                finding.subject
            ))
            .into_owned(),
            consumer: consumer.clone(),
            kind: kind.to_owned(),
            subject: finding.subject,
            input: InputRef {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                event,
                redelivered: message.redelivered,
                received_at: message.received_at,
            },
            data,
            models: finding.models,
            actions: Vec::new(),
            possible_duplicate: message.redelivered,
            bugflow_version: env!("CARGO_PKG_VERSION").to_owned(),
            produced_at: Utc::now(),
        }
    }
}
