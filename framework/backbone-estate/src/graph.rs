//! The estate's topology: services and the topics they write and read, as Mermaid text and as a
//! standalone SVG.
//!
//! Arrows go from a service to each topic it writes and from a topic to each service that reads
//! it; private topics are drawn dashed. Dead-letter and retry topics (one per consumed source,
//! `<service>.private.dlq.…` and `<service>.private.retry.…`) are left out: they would double the
//! picture and say nothing the consumers do not.
//!
//! The SVG's layout is two layers: services on the left, each beside the topics it owns, topics on
//! the right, grouped by owner.

use std::fmt::Write as _;

use backbone::topic::Visibility;

use crate::manifest::Estate;

/// A topic as the graph draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicNode {
    name: String,
    owner: String,
    private: bool,
}

/// The graph: services, topics (grouped by owner), and edges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Topology {
    services: Vec<String>,
    topics: Vec<TopicNode>,
    /// (service, topic index)
    writes: Vec<(usize, usize)>,
    /// (topic index, service)
    reads: Vec<(usize, usize)>,
}

/// Whether `topic` is a dead-letter or retry topic of the framework's.
fn is_framework_topic(topic: &str) -> bool {
    topic.split_once(".private.").is_some_and(|(owner, rest)| {
        !owner.contains('.') && (rest.starts_with("dlq.") || rest.starts_with("retry."))
    })
}

impl Topology {
    fn of(estate: &Estate) -> Self {
        let services: Vec<String> = estate.services().map(|s| s.name().to_owned()).collect();
        let mut topics: Vec<TopicNode> = estate
            .topics()
            .into_iter()
            .filter(|(name, _)| !is_framework_topic(name))
            .map(|(name, spec)| TopicNode {
                name: name.to_owned(),
                owner: spec.owner().to_owned(),
                private: spec.visibility() == Visibility::Private,
            })
            .collect();
        topics.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        let index = |name: &str| services.iter().position(|s| s == name);
        let (mut writes, mut reads) = (Vec::new(), Vec::new());
        for (t, topic) in topics.iter().enumerate() {
            writes.extend(estate.writers(&topic.name).into_iter().filter_map(index).map(|s| (s, t)));
            reads.extend(estate.readers(&topic.name).into_iter().filter_map(index).map(|s| (t, s)));
        }
        Self { services, topics, writes, reads }
    }
}

/// The topology as a Mermaid flowchart.
pub fn mermaid(estate: &Estate) -> String {
    let g = Topology::of(estate);
    let mut out = String::from("flowchart LR\n");
    out.push_str("    classDef service fill:#e8f0fe,stroke:#1a56db,stroke-width:2px\n");
    out.push_str("    classDef public fill:#ffffff,stroke:#333333\n");
    out.push_str("    classDef private fill:#f4f4f4,stroke:#777777,stroke-dasharray:5 5\n");
    for (i, s) in g.services.iter().enumerate() {
        let _ = writeln!(out, "    s{i}[[\"{s}\"]]:::service");
    }
    for (i, t) in g.topics.iter().enumerate() {
        let class = if t.private { "private" } else { "public" };
        let _ = writeln!(out, "    t{i}[\"{}\"]:::{class}", t.name);
    }
    for (s, t) in &g.writes {
        let arrow = if g.topics[*t].private { "-.->" } else { "-->" };
        let _ = writeln!(out, "    s{s} {arrow}|writes| t{t}");
    }
    for (t, s) in &g.reads {
        let arrow = if g.topics[*t].private { "-.->" } else { "-->" };
        let _ = writeln!(out, "    t{t} {arrow}|reads| s{s}");
    }
    out
}

const MARGIN: f64 = 24.0;
const ROW: f64 = 56.0;
const BOX_H: f64 = 36.0;
const SERVICE_W: f64 = 150.0;
const GAP: f64 = 260.0;
const CHAR_W: f64 = 7.4;

/// The topology as a standalone SVG document.
pub fn svg(estate: &Estate) -> String {
    let g = Topology::of(estate);
    let topic_w = g.topics.iter().map(|t| t.name.len() as f64 * CHAR_W + 24.0).fold(200.0, f64::max);
    let rows = g.topics.len().max(g.services.len()).max(1) as f64;
    let legend = 3.0 * 22.0 + 16.0;
    let width = MARGIN * 2.0 + SERVICE_W + GAP + topic_w;
    let height = MARGIN * 2.0 + rows * ROW + legend;
    let topic_x = MARGIN + SERVICE_W + GAP;
    let topic_y = |t: usize| MARGIN + t as f64 * ROW;
    // Each service beside its own topics (their middle row), else spread over the rows.
    let mut service_y: Vec<f64> = g
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let own: Vec<usize> = (0..g.topics.len()).filter(|t| &g.topics[*t].owner == s).collect();
            if own.is_empty() {
                MARGIN + i as f64 * ROW
            } else {
                topic_y(own[own.len() / 2]) - if own.len().is_multiple_of(2) { ROW / 2.0 } else { 0.0 }
            }
        })
        .collect();
    // No two services on top of each other.
    let mut order: Vec<usize> = (0..service_y.len()).collect();
    order.sort_by(|a, b| service_y[*a].total_cmp(&service_y[*b]));
    for pair in 1..order.len() {
        let (prev, cur) = (order[pair - 1], order[pair]);
        if service_y[cur] < service_y[prev] + ROW {
            service_y[cur] = service_y[prev] + ROW;
        }
    }
    let height = height.max(service_y.iter().fold(0.0, |m: f64, y| m.max(*y)) + ROW + legend + MARGIN);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##
    );
    out.push_str(concat!(
        "  <defs>\n",
        "    <marker id=\"write\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#1a56db\"/></marker>\n",
        "    <marker id=\"read\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#0e9f6e\"/></marker>\n",
        "  </defs>\n",
        "  <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
    ));
    let mid = BOX_H / 2.0;
    for (s, t) in &g.writes {
        let (x1, y1) = (MARGIN + SERVICE_W, service_y[*s] + mid - 6.0);
        let (x2, y2) = (topic_x, topic_y(*t) + mid - 6.0);
        let dash = if g.topics[*t].private { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            out,
            r##"  <path class="write" d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#1a56db" stroke-width="1.5"{dash} marker-end="url(#write)"><title>{} writes {}</title></path>"##,
            x1 + GAP / 2.0,
            x2 - GAP / 2.0,
            esc(&g.services[*s]),
            esc(&g.topics[*t].name)
        );
    }
    for (t, s) in &g.reads {
        let (x1, y1) = (topic_x, topic_y(*t) + mid + 6.0);
        let (x2, y2) = (MARGIN + SERVICE_W, service_y[*s] + mid + 6.0);
        let dash = if g.topics[*t].private { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            out,
            r##"  <path class="read" d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#0e9f6e" stroke-width="1.5"{dash} marker-end="url(#read)"><title>{} reads {}</title></path>"##,
            x1 - GAP / 2.0,
            x2 + GAP / 2.0,
            esc(&g.services[*s]),
            esc(&g.topics[*t].name)
        );
    }
    for (i, s) in g.services.iter().enumerate() {
        let y = service_y[i];
        let _ = writeln!(
            out,
            r##"  <g class="service"><rect x="{MARGIN}" y="{y:.1}" width="{SERVICE_W}" height="{BOX_H}" rx="8" fill="#e8f0fe" stroke="#1a56db" stroke-width="2"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text></g>"##,
            MARGIN + SERVICE_W / 2.0,
            y + mid + 4.0,
            esc(s)
        );
    }
    for (t, topic) in g.topics.iter().enumerate() {
        let y = topic_y(t);
        let (fill, stroke, dash) = if topic.private {
            ("#f4f4f4", "#777777", r#" stroke-dasharray="6 4""#)
        } else {
            ("#ffffff", "#333333", "")
        };
        let class = if topic.private { "topic private" } else { "topic public" };
        let _ = writeln!(
            out,
            r##"  <g class="{class}"><rect x="{topic_x:.1}" y="{y:.1}" width="{topic_w:.1}" height="{BOX_H}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dash}/><text x="{:.1}" y="{:.1}">{}</text></g>"##,
            topic_x + 12.0,
            y + mid + 4.0,
            esc(&topic.name)
        );
    }
    let y = height - MARGIN - legend + 16.0;
    let items = [
        ("#1a56db", "", "writes (service → topic)"),
        ("#0e9f6e", "", "reads (topic → service)"),
        ("#777777", r#" stroke-dasharray="6 4""#, "private topic (only its owner reads and writes it)"),
    ];
    for (i, (color, dash, label)) in items.iter().enumerate() {
        let ly = y + i as f64 * 22.0;
        let _ = writeln!(
            out,
            r##"  <line x1="{MARGIN}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            MARGIN + 40.0,
            MARGIN + 50.0,
            ly + 4.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// `text` escaped for XML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use backbone::Service;
    use backbone::consume::dead_letter_topic;
    use backbone::topic::TopicSpec;

    use super::*;

    fn estate() -> Estate {
        let created = TopicSpec::public("orders", "order-created", 1).build().unwrap();
        let state = TopicSpec::private("orders", "state").build().unwrap();
        let orders = Service::new("orders").owns(&created).owns(&state).consumes(&state).spec().unwrap();
        let stock = Service::new("stock")
            .consumes(&created)
            .owns(&dead_letter_topic("stock", &created).unwrap())
            .spec()
            .unwrap();
        Estate::of([orders, stock]).unwrap()
    }

    #[test]
    fn mermaid_draws_writes_reads_and_private_topics_dashed() {
        let text = mermaid(&estate());
        let expected = [
            "flowchart LR",
            r#"s0[["orders"]]:::service"#,
            r#"s1[["stock"]]:::service"#,
            r#"t0["orders.private.state"]:::private"#,
            r#"t1["orders.public.order-created-v1"]:::public"#,
            "s0 -.->|writes| t0",
            "s0 -->|writes| t1",
            "t0 -.->|reads| s0",
            "t1 -->|reads| s1",
        ];
        for line in expected {
            assert!(text.lines().any(|l| l.trim() == line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("dlq"), "dead-letter topics are left out:\n{text}");
    }

    #[test]
    fn svg_is_one_document_with_every_box_and_arrow() {
        let doc = svg(&estate());
        assert!(doc.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{doc}");
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<g class=\"service\">").count(), 2);
        assert_eq!(doc.matches("<g class=\"topic private\">").count(), 1);
        assert_eq!(doc.matches("<g class=\"topic public\">").count(), 1);
        assert_eq!(doc.matches("class=\"write\"").count(), 2);
        assert_eq!(doc.matches("class=\"read\"").count(), 2);
        assert!(doc.contains("<title>stock reads orders.public.order-created-v1</title>"));
        // The private topic's box and its arrows are dashed; the public one's box is not.
        let private_box = doc.lines().find(|l| l.contains("topic private")).unwrap();
        assert!(private_box.contains("stroke-dasharray"), "{private_box}");
        let public_box = doc.lines().find(|l| l.contains("topic public")).unwrap();
        assert!(!public_box.contains("stroke-dasharray"), "{public_box}");
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
