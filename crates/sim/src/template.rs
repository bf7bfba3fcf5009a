//! Payload templates: `{"temperature": {{rand 15 40}}, "seq": {{seq}}}`.
//!
//! Placeholders: `{{rand A B}}` a random number between A and B (whole when
//! both are whole, else with two decimals), `{{seq}}` the device's frame
//! counter from 1, `{{device}}` its id, `{{time}}` Unix milliseconds.

use anyhow::bail;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Rand { low: f64, high: f64, whole: bool },
    Seq,
    Device,
    Time,
}

/// The default payload: a temperature reading the demo rule reacts to
/// above 30.
pub const DEFAULT: &str = r#"{"temperature": {{rand 15 40}}, "seq": {{seq}}}"#;

impl Template {
    /// Parses `text`; an unknown or malformed placeholder is an error.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let Some(len) = rest[start..].find("}}") else {
                bail!("payload template: {{{{ at byte {start} is never closed");
            };
            let inner = rest[start + 2..start + len].trim();
            let words: Vec<&str> = inner.split_whitespace().collect();
            parts.push(match words.as_slice() {
                ["seq"] => Part::Seq,
                ["device"] => Part::Device,
                ["time"] => Part::Time,
                ["rand", low, high] => {
                    let (Ok(low_value), Ok(high_value)) = (low.parse::<f64>(), high.parse::<f64>())
                    else {
                        bail!("payload template: {{{{{inner}}}}}: rand takes two numbers");
                    };
                    if low_value > high_value {
                        bail!("payload template: {{{{{inner}}}}}: the low bound is above the high one");
                    }
                    Part::Rand {
                        low: low_value,
                        high: high_value,
                        whole: !low.contains('.') && !high.contains('.'),
                    }
                }
                _ => bail!(
                    "payload template: unknown placeholder {{{{{inner}}}}}: expected rand A B, seq, device or time"
                ),
            });
            rest = &rest[start + len + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The payload of frame `seq` of `device`; `random` gives numbers in [0, 1).
    pub fn render(&self, device: &str, seq: u64, random: &mut impl FnMut() -> f64) -> Vec<u8> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Seq => out.push_str(&seq.to_string()),
                Part::Device => out.push_str(device),
                Part::Time => {
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.as_millis());
                    out.push_str(&ms.to_string());
                }
                Part::Rand { low, high, whole } => {
                    if *whole {
                        let span = (high - low) as u64 + 1;
                        let value =
                            *low as i64 + ((random() * span as f64) as u64).min(span - 1) as i64;
                        out.push_str(&value.to_string());
                    } else {
                        out.push_str(&format!("{:.2}", low + random() * (high - low)));
                    }
                }
            }
        }
        out.into_bytes()
    }
}

/// A small, fast generator for payloads (not for anything secret).
pub struct Xorshift(u64);

impl Xorshift {
    pub fn seeded(seed: u64) -> Self {
        Xorshift(seed | 1)
    }

    /// A number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        let template =
            Template::parse(r#"{"t": {{rand 15 40}}, "n": {{seq}}, "d": "{{device}}"}"#).unwrap();
        let mut random = Xorshift::seeded(7);
        for seq in 1..200 {
            let payload = template.render("thermo-1", seq, &mut || random.next_f64());
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let t = value["t"].as_i64().unwrap();
            assert!((15..=40).contains(&t), "{t}");
            assert_eq!(value["n"], seq);
            assert_eq!(value["d"], "thermo-1");
        }
        let decimals = Template::parse("{{rand 0.5 1.5}}").unwrap();
        let text = String::from_utf8(decimals.render("d", 1, &mut || 0.5)).unwrap();
        assert_eq!(text, "1.00");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (text, says) in [
            ("{{rand 1}}", "unknown placeholder"),
            ("{{rand 5 1}}", "low bound"),
            ("{{nope}}", "unknown placeholder"),
            ("{{seq", "never closed"),
        ] {
            let error = Template::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
