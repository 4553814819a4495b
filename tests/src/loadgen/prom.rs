//! Prometheus text scraping: the buckets of one histogram (summed over its other labels), and
//! quantiles of the difference between two scrapes (what happened inside a measured window),
//! interpolated within a bucket the way PromQL's `histogram_quantile` does.

use anyhow::{Context, Result};

/// Cumulative buckets `(le, count)` in ascending `le`, the last one `+Inf`, plus `_sum`/`_count`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

/// Fetches `url` and extracts histogram `name`.
pub async fn scrape(http: &reqwest::Client, url: &str, name: &str) -> Result<Histogram> {
    let text = http.get(url).send().await.with_context(|| format!("GET {url}"))?.text().await?;
    Ok(parse(&text, name))
}

/// Extracts histogram `name` from Prometheus text (empty when absent).
pub fn parse(text: &str, name: &str) -> Histogram {
    let bucket = format!("{name}_bucket{{");
    let sum = format!("{name}_sum");
    let count = format!("{name}_count");
    let mut h = Histogram::default();
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        if let Some(labels) = key.strip_prefix(&bucket) {
            let Some(le) = labels.split("le=\"").nth(1).and_then(|s| s.split('"').next()) else { continue };
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
            if le.is_nan() {
                continue;
            }
            match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += value,
                None => h.buckets.push((le, value)),
            }
        } else if key == sum || key.starts_with(&format!("{sum}{{")) {
            h.sum += value;
        } else if key == count || key.starts_with(&format!("{count}{{")) {
            h.count += value;
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    h
}

impl Histogram {
    /// `self - before`, bucket by bucket (both from the same server).
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                let prev = before.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |&(_, p)| p);
                (le, (c - prev).max(0.0))
            })
            .collect();
        Histogram { buckets, sum: self.sum - before.sum, count: self.count - before.count }
    }

    /// The `q` quantile (0..=1), linearly interpolated within its bucket; `None` when empty.
    /// A quantile that falls in the `+Inf` bucket is reported as the highest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|&(_, c)| c)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(prev_le);
                }
                let in_bucket = count - prev_count;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
            }
            prev_le = le;
            prev_count = count;
        }
        Some(prev_le)
    }

    /// Mean observation, when any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// Upper bound of the highest non-empty bucket (what the maximum is at most).
    pub fn max_bound(&self) -> Option<f64> {
        let mut prev = 0.0;
        let mut bound = None;
        for &(le, count) in &self.buckets {
            if count > prev {
                bound = Some(le);
            }
            prev = count;
        }
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE t histogram\n\
        t_bucket{le=\"0.001\"} 10\n\
        t_bucket{le=\"0.005\"} 90\n\
        t_bucket{le=\"0.01\"} 100\n\
        t_bucket{le=\"+Inf\"} 100\n\
        t_sum 0.25\n\
        t_count 100\n\
        other_bucket{le=\"1\"} 5\n";

    #[test]
    fn parses_and_interpolates() {
        let h = parse(TEXT, "t");
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.count, 100.0);
        let p50 = h.quantile(0.5).unwrap_or(0.0);
        assert!((p50 - 0.003).abs() < 1e-9, "{p50}");
        let p99 = h.quantile(0.99).unwrap_or(0.0);
        assert!((p99 - 0.0095).abs() < 1e-9, "{p99}");
        assert_eq!(h.max_bound(), Some(0.01));
        let empty = h.since(&h);
        assert_eq!(empty.quantile(0.5), None);
        let before = parse(&TEXT.replace("} 90", "} 80").replace("} 100", "} 85"), "t");
        let d = h.since(&before);
        assert_eq!(d.buckets[3].1, 15.0);
    }
}
