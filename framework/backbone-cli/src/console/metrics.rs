//! The services' own numbers, where their `/metrics` endpoints are reachable (`--metrics
//! SERVICE=URL`, once per instance): each instance's Prometheus text is read every refresh
//! (bounded in time and size) and the event counters summed per service.

use std::collections::BTreeMap;
use std::time::Duration;

/// How long one scrape may take.
const SCRAPE_TIME: Duration = Duration::from_secs(2);
/// The most bytes of one scrape read.
const SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// The counters shown, by family, with their label on the page.
pub(crate) const FAMILIES: [(&str, &str); 6] = [
    ("backbone_events_consumed_total", "consumed"),
    ("backbone_events_handled_total", "handled"),
    ("backbone_events_failed_total", "failed"),
    ("backbone_events_retried_total", "retried"),
    ("backbone_events_dead_lettered_total", "dead-lettered"),
    ("backbone_events_published_total", "published"),
];

/// A service's numbers, summed over its reachable instances.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceMetrics {
    /// Instances that answered.
    pub(crate) reached: usize,
    /// Instances asked.
    pub(crate) asked: usize,
    /// Each family's sum over every series and instance.
    pub(crate) totals: BTreeMap<&'static str, f64>,
    /// Why the last instance that failed did.
    pub(crate) error: Option<String>,
}

/// Parses `SERVICE=URL`.
pub(crate) fn parse_endpoint(value: &str) -> Result<(String, String), String> {
    let (service, url) =
        value.split_once('=').ok_or("expected SERVICE=URL, e.g. orders=http://orders:8080/metrics")?;
    if service.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{value}`: expected SERVICE=http(s)://host:port/metrics"));
    }
    Ok((service.to_owned(), url.to_owned()))
}

/// Sums the [`FAMILIES`]' samples in Prometheus text.
pub(crate) fn sums(text: &str) -> BTreeMap<&'static str, f64> {
    let mut totals = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let Some((_, label)) = FAMILIES.iter().find(|(family, _)| *family == name) else { continue };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
        if let Some(value) = value {
            *totals.entry(*label).or_insert(0.0) += value;
        }
    }
    totals
}

/// Scrapes every endpoint at once; the numbers per service.
pub(crate) async fn scrape(
    http: &reqwest::Client,
    endpoints: &[(String, String)],
) -> BTreeMap<String, ServiceMetrics> {
    let reads = endpoints.iter().map(|(service, url)| async move {
        let read = async {
            let reply = http.get(url).timeout(SCRAPE_TIME).send().await.map_err(|e| e.to_string())?;
            if !reply.status().is_success() {
                return Err(format!("{url}: HTTP {}", reply.status()));
            }
            let mut body = Vec::new();
            let mut reply = reply;
            while let Some(chunk) = reply.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > SCRAPE_BYTES {
                    return Err(format!("{url}: over {SCRAPE_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(sums(&String::from_utf8_lossy(&body)))
        };
        (service.clone(), read.await)
    });
    let mut found: BTreeMap<String, ServiceMetrics> = BTreeMap::new();
    for (service, read) in futures::future::join_all(reads).await {
        let entry = found.entry(service).or_default();
        entry.asked += 1;
        match read {
            Ok(totals) => {
                entry.reached += 1;
                for (label, value) in totals {
                    *entry.totals.entry(label).or_insert(0.0) += value;
                }
            }
            Err(e) => entry.error = Some(backbone::config::redact_url(&e).into_owned()),
        }
    }
    found
}
