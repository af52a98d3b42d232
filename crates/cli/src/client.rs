//! The admin API client: one request, its JSON answer, and the failure
//! mapped to a [`CliError`]. Every command goes through `get` or `post`, so
//! a new command (`taskq failed ...`) is a path and a formatter.

use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use crate::error::CliError;

/// How long one request may take, so a hung server cannot hang a script.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client for the admin API at `base` (e.g. `http://127.0.0.1:9502`).
pub struct Client {
    base: String,
    token: Option<String>,
    agent: Agent,
}

impl Client {
    /// A client for `url`, sending `token` as a bearer token if given.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(CliError::BadInput(format!(
                "--url must be an http:// address such as http://127.0.0.1:9502, not '{url}'"
            )));
        }
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    /// The server's base URL, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`, its JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(path, req.call())
    }

    /// `POST path` with a JSON `body` (or none), its JSON answer.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let sent = match body {
            Some(b) => req
                .header("Content-Type", "application/json")
                .send(b.to_string()),
            None => req.send_empty(),
        };
        self.finish(path, sent)
    }

    fn finish(
        &self,
        path: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut response = sent.map_err(|e| CliError::Unreachable {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| CliError::Unreachable {
                url: url.clone(),
                why: format!("the answer could not be read: {e}"),
            })?;
        answer(&url, status, &text)
    }
}

/// The JSON of an answer with `status`, or the failure it stands for.
pub fn answer(url: &str, status: u16, text: &str) -> Result<Value, CliError> {
    let json: Result<Value, _> = serde_json::from_str(text);
    let why = || match &json {
        Ok(v) => v
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| v.to_string(), str::to_string),
        Err(_) => text.trim().to_string(),
    };
    match status {
        200..=299 => json.map_err(|e| CliError::BadAnswer {
            url: url.into(),
            why: e.to_string(),
        }),
        401 => Err(CliError::Unauthorized {
            url: url.into(),
            why: why(),
        }),
        _ => Err(CliError::Server {
            url: url.into(),
            status,
            why: why(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn answers_map_to_results_and_exit_codes() {
        let u = "http://127.0.0.1:1/api/ping";
        assert_eq!(answer(u, 200, r#"{"pid": 3}"#).unwrap()["pid"], 3);
        let e = answer(u, 401, r#"{"error": "a valid auth_token is required"}"#).unwrap_err();
        assert_eq!(e.exit_code(), exit::UNAUTHORIZED);
        assert!(e.to_string().contains(u));
        let e = answer(u, 503, r#"{"error": "the queue is full"}"#).unwrap_err();
        assert_eq!(e.exit_code(), exit::SERVER);
        assert!(e.to_string().ends_with("answered 503: the queue is full"));
        let e = answer(u, 404, "no such page\n").unwrap_err();
        assert!(e.to_string().ends_with("answered 404: no such page"));
        assert_eq!(
            answer(u, 200, "not json").unwrap_err().exit_code(),
            exit::SERVER
        );
    }

    #[test]
    fn only_http_urls_are_taken() {
        let e = Client::new("127.0.0.1:9502", None).err().unwrap();
        assert_eq!(e.exit_code(), exit::BAD_INPUT);
        assert_eq!(
            Client::new("http://127.0.0.1:9502/", None).unwrap().url(),
            "http://127.0.0.1:9502"
        );
    }
}
