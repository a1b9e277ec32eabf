//! What `/metrics` sends: OpenMetrics 1.0 to a scraper that asks for it (Prometheus does, first),
//! the Prometheus text format 0.0.4 to everyone else (`curl`, `promtool check metrics`, older
//! scrapers), chosen by the request's `Accept` header. Services write OpenMetrics (what
//! prometheus_client encodes); [`to_prometheus_text`] turns it into 0.0.4. Every endpoint also
//! carries `palisade_build_info` once the binary has named itself ([`set_build_info`]).

use std::sync::OnceLock;

/// The two exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    PrometheusText,
}

impl Format {
    /// The Content-Type of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The format an `Accept` header prefers: OpenMetrics when it names
/// `application/openmetrics-text` with a quality above zero and at least that of any text type;
/// otherwise (no header, `*/*`, `text/plain`) the Prometheus text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
            "text/plain" | "text/*" | "*/*" => text = text.max(quality),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

static BUILD_INFO: OnceLock<String> = OnceLock::new();

/// Names the binary for every admin server of this process: `palisade_build_info{version,
/// commit} 1`. Set once, at start; later calls change nothing.
pub fn set_build_info(version: &str, commit: &str) {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = BUILD_INFO.set(format!(
        "# HELP palisade_build_info The version and commit of this palisade binary.\n\
         # TYPE palisade_build_info gauge\n\
         palisade_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
        escape(version),
        escape(commit)
    ));
}

/// `openmetrics` (a service's exposition, ending with `# EOF` or not) with the build info added,
/// in `format`.
pub fn render(openmetrics: &str, format: Format) -> String {
    let body = openmetrics
        .strip_suffix("# EOF\n")
        .or_else(|| openmetrics.strip_suffix("# EOF"))
        .unwrap_or(openmetrics);
    let mut text = body.to_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if let Some(info) = BUILD_INFO.get() {
        text.push_str(info);
    }
    match format {
        Format::OpenMetrics => {
            text.push_str("# EOF\n");
            text
        }
        Format::PrometheusText => to_prometheus_text(&text),
    }
}

/// OpenMetrics to the Prometheus text format 0.0.4: a counter family is named with its `_total`
/// (in OpenMetrics its HELP and TYPE name the family without it), an info family becomes a gauge
/// named `_info`, `_created` samples, `# UNIT` lines, exemplars and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    // Each family's kind, from its TYPE line: its HELP line, which comes first, is renamed too.
    let kinds: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?, words.next().unwrap_or("")))
        })
        .collect();
    let text_name = |name: &str| match kinds.get(name).copied() {
        Some("counter") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_owned(),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            let kind = match kinds.get(name).copied().unwrap_or("") {
                "info" => "gauge",
                kind @ ("counter" | "gauge" | "histogram" | "summary") => kind,
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {} {kind}\n", text_name(name)));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = text_name(name);
            if help.is_empty() {
                out.push_str(&format!("# HELP {name}\n"));
            } else {
                out.push_str(&format!("# HELP {name} {help}\n"));
            }
        } else if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
            out.push('\n');
        } else {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            if line[..name_end].ends_with("_created") {
                continue;
            }
            // An exemplar follows ` # ` after the value; 0.0.4 has none. Looked for only after
            // the label set, whose quoted values may hold ` # ` themselves.
            let after_labels = labels_end(line);
            let sample = match line[after_labels..].find(" # ") {
                Some(at) => &line[..after_labels + at],
                None => line,
            };
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// The byte offset just past a sample line's label set (`name{...}`), skipping quoted values and
/// their escapes; the end of the name when there is no label set.
fn labels_end(line: &str) -> usize {
    let Some(open) = line.find(['{', ' ']) else {
        return line.len();
    };
    if !line[open..].starts_with('{') {
        return open;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return open + i + 1,
            _ => {}
        }
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_asks_for_openmetrics_and_everyone_else_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::PrometheusText);
        assert_eq!(negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4")),
            Format::PrometheusText
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Format::PrometheusText
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::PrometheusText
        );
    }

    #[test]
    fn a_counter_family_is_named_with_its_total_in_the_text_format() {
        let om = "# HELP palisade_x Things done.\n# TYPE palisade_x counter\npalisade_x_total{a=\"1\"} 3\npalisade_x_created{a=\"1\"} 1.7e9\n# HELP palisade_up Up.\n# TYPE palisade_up gauge\n# UNIT palisade_up seconds\npalisade_up 1 # {trace=\"a\"} 1\n# TYPE palisade_v info\npalisade_v_info{v=\"1\"} 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP palisade_x_total Things done.\n# TYPE palisade_x_total counter\npalisade_x_total{a=\"1\"} 3\n# HELP palisade_up Up.\n# TYPE palisade_up gauge\npalisade_up 1\n# TYPE palisade_v_info gauge\npalisade_v_info{v=\"1\"} 1\n"
        );
    }

    #[test]
    fn a_label_value_holding_a_hash_is_not_taken_for_an_exemplar() {
        let om = "# TYPE palisade_y counter\npalisade_y_total{listener=\"a # b\",at=\"x\\\" # }\"} 2 # {trace=\"t\"} 1\n";
        assert_eq!(
            to_prometheus_text(om),
            "# TYPE palisade_y_total counter\npalisade_y_total{listener=\"a # b\",at=\"x\\\" # }\"} 2\n"
        );
    }

    #[test]
    fn the_build_info_is_added_in_either_format() {
        set_build_info("0.1.0", "abc\"def");
        let om = render("# TYPE a gauge\na 1\n# EOF\n", Format::OpenMetrics);
        assert!(
            om.ends_with("palisade_build_info{version=\"0.1.0\",commit=\"abc\\\"def\"} 1\n# EOF\n"),
            "{om}"
        );
        assert_eq!(om.matches("# EOF").count(), 1);
        let text = render("# TYPE a gauge\na 1\n# EOF\n", Format::PrometheusText);
        assert!(
            !text.contains("# EOF") && text.contains("palisade_build_info{"),
            "{text}"
        );
    }
}
