//! "Did you mean": the one rule for suggesting a known name for a mistyped
//! one, shared by `set()` and the mailer so every caller hints alike.

/// Below this Jaro-Winkler score no suggestion is offered: unrelated Swoole
/// options (`open_http_protocol`, `ssl_cert_file`, ...) must not get
/// misleading hints, while typos such as `cafile` or `max_requests` still do.
const THRESHOLD: f64 = 0.91;

/// The known name closest to `key` after ignoring case and surrounding
/// whitespace, or `None` when none is close enough to be what was meant.
/// On a tie the earlier name in `known` wins, so the answer is stable.
pub fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let wanted = key.trim().to_lowercase();
    known
        .iter()
        .map(|name| (strsim::jaro_winkler(&wanted, name), *name))
        .fold(None, |best: Option<(f64, &str)>, candidate| match best {
            Some(b) if b.0 >= candidate.0 => Some(b),
            _ => Some(candidate),
        })
        .filter(|(score, _)| *score >= THRESHOLD)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_case_and_spaces_find_the_name() {
        let known = ["timeout", "connect_timeout", "ca_file", "attachments"];
        assert_eq!(closest("timout", &known), Some("timeout"));
        assert_eq!(closest("cafile", &known), Some("ca_file"));
        assert_eq!(closest("attachements", &known), Some("attachments"));
        assert_eq!(closest(" TimeOut ", &known), Some("timeout"));
    }

    #[test]
    fn unrelated_names_get_no_suggestion() {
        assert_eq!(closest("zzqqxx_frobnicate", &["worker_num"]), None);
        assert_eq!(closest("anything", &[]), None);
    }
}
