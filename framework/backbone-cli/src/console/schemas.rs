//! The schema registry as the console shows it: subjects grouped by event (`<owner>.public.<event>`,
//! one subject per topic version `-v<N>`), their registered versions, compatibility rules, and a
//! line diff between any two versions (of one subject, or of two topic versions of one event).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use similar::{ChangeTag, TextDiff};

/// The most subjects listed.
const MAX_SUBJECTS: usize = 2_000;
/// The most bytes of one schema read.
const MAX_SCHEMA: usize = 256 * 1024;

/// A read-only client of a Confluent-compatible registry API.
#[derive(Debug, Clone)]
pub(crate) struct Schemas {
    base: String,
    http: reqwest::Client,
}

/// One registered version of a subject.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Version {
    /// The subject.
    pub(crate) subject: String,
    /// Its version number.
    pub(crate) version: i64,
    /// The global schema id.
    pub(crate) id: i64,
    /// The schema text.
    pub(crate) schema: String,
}

impl Version {
    /// The schema, pretty-printed (as registered, if it is not JSON).
    pub(crate) fn pretty(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.schema)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| self.schema.clone())
    }
}

/// A subject's place in the estate's naming: `<owner>.public.<event>-v<N>-value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Named {
    /// The event family: `<owner>.public.<event>` (or the subject itself when not so named).
    pub(crate) family: String,
    /// The topic version `N` (0 when not so named).
    pub(crate) topic_version: u32,
    /// The topic (TopicNameStrategy: the subject without `-value`/`-key`).
    pub(crate) topic: String,
}

/// Where a subject sits in the estate's naming.
pub(crate) fn named(subject: &str) -> Named {
    let topic = subject.strip_suffix("-value").or_else(|| subject.strip_suffix("-key")).unwrap_or(subject);
    let (family, topic_version) = topic
        .rsplit_once("-v")
        .and_then(|(family, n)| Some((family.to_owned(), n.parse::<u32>().ok()?)))
        .unwrap_or_else(|| (topic.to_owned(), 0));
    Named { family, topic_version, topic: topic.to_owned() }
}

/// One line of a diff: `' '` same, `'-'` only in the first, `'+'` only in the second, `'…'` lines
/// left out (more than [`CONTEXT`] from a change).
pub(crate) type DiffLine = (char, String);

/// Unchanged lines shown around each change.
const CONTEXT: usize = 3;

/// The line diff from `a` to `b`: the changes with [`CONTEXT`] lines around each.
pub(crate) fn diff(a: &str, b: &str) -> Vec<DiffLine> {
    let diff = TextDiff::from_lines(a, b);
    let mut lines = Vec::new();
    for (i, group) in diff.grouped_ops(CONTEXT).iter().enumerate() {
        if i > 0 || group.first().is_some_and(|op| op.old_range().start > 0) {
            lines.push(('…', String::new()));
        }
        for op in group {
            for c in diff.iter_changes(op) {
                let tag = match c.tag() {
                    ChangeTag::Equal => ' ',
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                };
                lines.push((tag, c.value().trim_end_matches('\n').to_owned()));
            }
        }
    }
    lines
}

impl Schemas {
    /// A client for `url` (`…/apis/ccompat/v7`); requests time out after 10 s.
    pub(crate) fn new(url: &str, security: &backbone::config::RegistrySecurity) -> Result<Self, String> {
        let builder = security
            .apply(reqwest::Client::builder().timeout(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { base: url.trim_end_matches('/').to_owned(), http })
    }

    /// `/a/b/…` with each segment percent-encoded (subjects may hold any character).
    pub(crate) fn path(&self, segments: &[&str]) -> String {
        let mut url = reqwest::Url::parse("http://path.invalid/").expect("a base URL");
        url.path_segments_mut().expect("a base URL").pop_if_empty().extend(segments);
        url.path().to_owned()
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, String> {
        let url = format!("{}{path}", self.base);
        let shown = backbone::config::redact_url(&url).into_owned();
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{shown}: {}", backbone::config::redact_url(&e.to_string())))?;
        if reply.status().as_u16() == 404 {
            return Ok(None);
        }
        if !reply.status().is_success() {
            return Err(format!("{shown}: HTTP {}", reply.status()));
        }
        if reply.content_length().is_some_and(|n| n > MAX_SCHEMA as u64 * 4) {
            return Err(format!("{shown}: the reply is too large"));
        }
        let bytes = reply.bytes().await.map_err(|e| format!("{shown}: {e}"))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{shown}: {e}"))
    }

    /// Every subject, sorted (at most [`MAX_SUBJECTS`]).
    pub(crate) async fn subjects(&self) -> Result<Vec<String>, String> {
        let mut subjects: Vec<String> = self.get("/subjects").await?.unwrap_or_default();
        subjects.sort();
        subjects.truncate(MAX_SUBJECTS);
        Ok(subjects)
    }

    /// A subject's version numbers.
    pub(crate) async fn versions(&self, subject: &str) -> Result<Vec<i64>, String> {
        Ok(self.get(&self.path(&["subjects", subject, "versions"])).await?.unwrap_or_default())
    }

    /// One version of a subject (`None`: not registered).
    pub(crate) async fn version(&self, subject: &str, version: i64) -> Result<Option<Version>, String> {
        let found: Option<Version> =
            self.get(&self.path(&["subjects", subject, "versions", &version.to_string()])).await?;
        Ok(found.filter(|v| v.schema.len() <= MAX_SCHEMA))
    }

    /// The compatibility rule of `subject` (its own, else the registry's default).
    pub(crate) async fn compatibility(&self, subject: &str) -> Result<String, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Reply {
            compatibility_level: Option<String>,
            compatibility: Option<String>,
        }
        let own: Option<Reply> =
            self.get(&format!("{}?defaultToGlobal=true", self.path(&["config", subject]))).await?;
        let own = own.and_then(|r| r.compatibility_level.or(r.compatibility));
        if let Some(rule) = own {
            return Ok(rule);
        }
        let global: Option<Reply> = self.get("/config").await?;
        Ok(global
            .and_then(|r| r.compatibility_level.or(r.compatibility))
            .unwrap_or_else(|| "BACKWARD".into()))
    }

    /// Subjects grouped by event family, each family's subjects by topic version.
    pub(crate) async fn families(&self) -> Result<BTreeMap<String, Vec<(Named, String)>>, String> {
        let mut families: BTreeMap<String, Vec<(Named, String)>> = BTreeMap::new();
        for subject in self.subjects().await? {
            let n = named(&subject);
            families.entry(n.family.clone()).or_default().push((n, subject));
        }
        for subjects in families.values_mut() {
            subjects.sort();
        }
        Ok(families)
    }
}
