//! A consumer of an AWS Secrets Manager view (`[[publish]] type = "aws"`) on a private moto
//! server, as the CSI AWS provider or an SDK caching client reads it, shared by the view's
//! own tests and the `kill -9` test.
//!
//! [`AwsView`] reads one AWS secret: every version with its stages (`DescribeSecret`, then
//! `ListSecretVersionIds` with deprecated versions), and the value a stage names, always
//! with an explicit `VersionStage` (moto can answer a read without one with a stale version
//! right after a stage moved). [`AwsView::spawn_reader`] polls both every 50 ms until
//! finished and records each poll; [`check_polls`] holds the polls against the store's
//! version metadata afterwards. AWS version ids are mapped back to rotor versions through
//! rotor's deterministic request token, so a version id no rotor version stands for is
//! caught too.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::moto::{Moto, MotoClient, REGION};
use rotor::domain::{SecretRef, VersionMeta};
use rotor::publish::aws::request_token;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// The rotor versions a reader can name from an AWS version id (1 to this).
const MAX_VERSION: u64 = 500;

/// Each AWS version id of a secret with its stages (an empty list: no stage).
pub type Stages = BTreeMap<String, Vec<String>>;

/// One AWS secret written by a rotor view, read as a consumer would.
#[derive(Clone)]
pub struct AwsView {
    client: MotoClient,
    name: String,
}

impl AwsView {
    pub fn new(moto: &Moto, name: &str) -> AwsView {
        AwsView {
            client: moto.client(),
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The view's label, which rotor's request tokens are made from.
    pub fn label(&self) -> String {
        format!("aws:{REGION}/{}", self.name)
    }

    /// The AWS version id rotor gives `version` of `secret` (a view of that one secret).
    pub fn token(&self, secret: &SecretRef, version: u64) -> String {
        request_token(&self.label(), &BTreeMap::from([(secret.clone(), version)]))
    }

    /// The rotor version an AWS version id stands for (versions 1 to 500 are tried).
    pub fn version_of(&self, secret: &SecretRef, id: &str) -> Option<u64> {
        (1..=MAX_VERSION).find(|v| self.token(secret, *v) == id)
    }

    /// Every version of the secret (deprecated ones too) with its stages; `None` when the
    /// secret does not exist.
    pub async fn versions(&self) -> Option<Stages> {
        // moto answers ListSecretVersionIds of a missing secret with a 500, not
        // ResourceNotFoundException: ask DescribeSecret first.
        let (_, described) = self
            .client
            .secrets_manager("DescribeSecret", &json!({"SecretId": self.name}))
            .await;
        if described["__type"] == "ResourceNotFoundException" {
            return None;
        }
        let (status, body) = self
            .client
            .secrets_manager(
                "ListSecretVersionIds",
                &json!({"SecretId": self.name, "IncludeDeprecated": true}),
            )
            .await;
        assert_eq!(status, 200, "ListSecretVersionIds: {body}");
        Some(
            body["Versions"]
                .as_array()
                .expect("Versions")
                .iter()
                .map(|v| {
                    let stages = v["VersionStages"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        v["VersionId"].as_str().unwrap_or_default().to_owned(),
                        stages,
                    )
                })
                .collect(),
        )
    }

    /// `(VersionId, SecretString)` of the version `stage` names, read with that stage
    /// explicitly.
    pub async fn staged(&self, stage: &str) -> Option<(String, String)> {
        let (status, body) = self
            .client
            .secrets_manager(
                "GetSecretValue",
                &json!({"SecretId": self.name, "VersionStage": stage}),
            )
            .await;
        if status != 200 {
            return None;
        }
        Some((
            body["VersionId"].as_str()?.to_owned(),
            body["SecretString"].as_str()?.to_owned(),
        ))
    }

    /// Polls the stages and the `AWSCURRENT` value every 50 ms until finished. A version id
    /// no version of `secret` stands for, or a count of `AWSCURRENT` other than one once
    /// the secret exists, is recorded as bad.
    pub fn spawn_reader(&self, secret: SecretRef) -> AwsReader {
        let stop = Arc::new(AtomicBool::new(false));
        let reading = Arc::new(Mutex::new(AwsReading::default()));
        let view = self.clone();
        let ids: HashMap<String, u64> = (1..=MAX_VERSION)
            .map(|v| (view.token(&secret, v), v))
            .collect();
        let task = {
            let stop = stop.clone();
            let shared = reading.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(listed) = view.versions().await {
                        // Stamped after the answer: what it shows was there by then.
                        let at = Utc::now();
                        let mut bad = Vec::new();
                        let mut versions = BTreeMap::new();
                        for (id, stages) in &listed {
                            match ids.get(id) {
                                Some(v) => {
                                    versions.insert(*v, stages.clone());
                                }
                                None => {
                                    bad.push(format!("a version id that is no rotor version: {id}"))
                                }
                            }
                        }
                        let currents = listed
                            .values()
                            .filter(|s| s.iter().any(|x| x == AWSCURRENT))
                            .count();
                        if currents != 1 {
                            bad.push(format!(
                                "{currents} versions labelled AWSCURRENT: {listed:?}"
                            ));
                        }
                        let current_value = view
                            .staged(AWSCURRENT)
                            .await
                            .and_then(|(id, text)| ids.get(&id).map(|v| (*v, text, Utc::now())));
                        let mut r = shared.lock().expect("reading");
                        r.bad.extend(bad);
                        r.polls.push(Poll {
                            at,
                            versions,
                            current_value,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        AwsReader {
            stop,
            reading,
            task,
        }
    }
}

/// One poll: when the stages were read, each AWS version as a rotor version with its
/// stages, and the version `AWSCURRENT` named when read by stage, with its `SecretString`
/// and when that answer came.
#[derive(Debug, Clone)]
pub struct Poll {
    pub at: DateTime<Utc>,
    pub versions: BTreeMap<u64, Vec<String>>,
    pub current_value: Option<(u64, String, DateTime<Utc>)>,
}

impl Poll {
    /// The versions holding `stage` in this poll.
    pub fn holding(&self, stage: &str) -> Vec<u64> {
        self.versions
            .iter()
            .filter(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(v, _)| *v)
            .collect()
    }
}

/// What a reader recorded: every poll, and every inconsistency it met.
#[derive(Debug, Default)]
pub struct AwsReading {
    pub polls: Vec<Poll>,
    pub bad: Vec<String>,
}

impl AwsReading {
    /// The `AWSCURRENT` versions read, in order, each once per run of equal reads.
    pub fn currents(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for p in &self.polls {
            if let Some((v, _, _)) = p.current_value
                && out.last() != Some(&v)
            {
                out.push(v);
            }
        }
        out
    }

    /// When each version was first read as `AWSCURRENT`.
    pub fn first_current(&self) -> BTreeMap<u64, DateTime<Utc>> {
        let mut out = BTreeMap::new();
        for p in &self.polls {
            if let Some((v, _, at)) = &p.current_value {
                out.entry(*v).or_insert(*at);
            }
        }
        out
    }
}

/// A running reader; what it has read so far is shared.
pub struct AwsReader {
    stop: Arc<AtomicBool>,
    reading: Arc<Mutex<AwsReading>>,
    task: tokio::task::JoinHandle<()>,
}

impl AwsReader {
    /// The version the last poll read as `AWSCURRENT`.
    pub fn last_current(&self) -> Option<u64> {
        self.reading
            .lock()
            .expect("reading")
            .polls
            .iter()
            .rev()
            .find_map(|p| p.current_value.as_ref().map(|(v, _, _)| *v))
    }

    /// Stops the reader and hands over what it read.
    pub async fn finish(self) -> AwsReading {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("AWS reader");
        std::mem::take(&mut *self.reading.lock().expect("reading"))
    }
}

/// Every version AWS held at a poll (any stage or none) had been promoted by then (its
/// `promoted_at` in `metas`, the store's metadata read after the run), and so had every
/// version read as `AWSCURRENT`, whose value `value_ok` checks (`Err` says what is wrong,
/// never the value).
pub fn check_polls(
    metas: &[VersionMeta],
    polls: &[Poll],
    value_ok: impl Fn(u64, &str) -> Result<(), String>,
) {
    let promoted = |v: u64, at: DateTime<Utc>, what: &str| {
        let meta = metas
            .iter()
            .find(|m| m.version == v)
            .unwrap_or_else(|| panic!("AWS {what} version {v}, which the store lacks"));
        let promoted = meta.promoted_at.unwrap_or_else(|| {
            panic!("AWS {what} version {v} at {at}, which was never promoted ({meta:?})")
        });
        assert!(
            promoted <= at,
            "AWS {what} version {v} at {at} before its promotion at {promoted}"
        );
    };
    for p in polls {
        for v in p.versions.keys() {
            promoted(*v, p.at, "held");
        }
        if let Some((v, text, at)) = &p.current_value {
            promoted(*v, *at, "showed as AWSCURRENT");
            if let Err(e) = value_ok(*v, text) {
                panic!("AWSCURRENT at {at}, version {v}: {e}");
            }
        }
    }
}
