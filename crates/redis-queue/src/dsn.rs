//! The `task_backend` DSN: where Redis is and how to log in. Parsed here
//! (not by redis-rs's URL reader) so that every mistake names the part of
//! the DSN that is wrong, and so that no message ever shows the password.

use percent_encoding::percent_decode_str;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// Redis's own default port, used when a TCP DSN names none.
pub const DEFAULT_PORT: u16 = 6379;

const FORMS: &str = "redis://[user:pass@]host[:port][/db], rediss://[user:pass@]host[:port][/db], \
                     unix:///path/redis.sock[?db=N&user=U&password=P] \
                     or redis+cluster://[user:pass@]host[:port][,host[:port]...] (rediss+cluster:// with TLS)";

/// The schemes of a Redis Cluster DSN: plain and TLS.
const CLUSTER: &str = "redis+cluster";
const CLUSTER_TLS: &str = "rediss+cluster";

/// A DSN that cannot be used, with the part that is wrong and why. Its
/// message shows the DSN with the password replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis DSN `{dsn}`: {part}: {reason} (expected {FORMS})")]
pub struct DsnError {
    /// The DSN as given, password masked.
    pub dsn: String,
    /// Which part is wrong: scheme, host, port, user, password, database,
    /// path, query.
    pub part: &'static str,
    pub reason: String,
}

/// A parsed DSN: what redis-rs needs to connect, plus a printable form.
#[derive(Clone)]
pub struct Dsn {
    target: Target,
    shown: String,
}

/// Where the queue's Redis is: one server, or the seed nodes of a Redis
/// Cluster (the client learns the others and the slots from them).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    One(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Dsn").field(&self.shown).finish()
    }
}

impl Dsn {
    /// Parses `redis://`, `rediss://` (TLS), `unix://` and the Redis
    /// Cluster forms `redis+cluster://` and `rediss+cluster://` (TLS).
    pub fn parse(dsn: &str) -> Result<Self, DsnError> {
        let shown = redact(dsn);
        let fail = |part: &'static str, reason: String| DsnError {
            dsn: shown.clone(),
            part,
            reason,
        };
        // A list of nodes is no URL (the url crate reads `a:1,b:2` as one
        // host with a bad port), so the cluster forms are split first.
        if let Some((scheme, rest)) = dsn.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == CLUSTER || scheme == CLUSTER_TLS {
                let nodes = cluster(&scheme, rest, &fail)?;
                return Ok(Self {
                    target: Target::Cluster(nodes),
                    shown,
                });
            }
        }
        let url = parse_url(dsn, &fail)?;
        if url.fragment().is_some() {
            return Err(fail("fragment", "a `#...` part is not allowed".into()));
        }
        let info = match url.scheme() {
            "redis" | "rediss" => tcp(&url, &fail)?,
            "unix" => unix(&url, &fail)?,
            other => {
                return Err(fail(
                    "scheme",
                    format!(
                        "`{other}` is not one of redis, rediss, unix, {CLUSTER}, {CLUSTER_TLS}"
                    ),
                ))
            }
        };
        Ok(Self {
            target: Target::One(Box::new(info)),
            shown,
        })
    }

    /// The DSN with its password masked, for logs and error messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the connection is encrypted (`rediss://`,
    /// `rediss+cluster://`).
    pub fn is_tls(&self) -> bool {
        let first = match &self.target {
            Target::One(info) => Some(&**info),
            Target::Cluster(nodes) => nodes.first(),
        };
        first.is_some_and(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
    }

    /// Whether the DSN names a Redis Cluster (`redis+cluster://`,
    /// `rediss+cluster://`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }
}

/// Parses a one-server DSN (or one node of a cluster DSN, rewritten as
/// one) with each url error turned into the part it concerns.
fn parse_url(
    dsn: &str,
    fail: &dyn Fn(&'static str, String) -> DsnError,
) -> Result<url::Url, DsnError> {
    url::Url::parse(dsn).map_err(|e| match e {
        url::ParseError::InvalidPort => fail("port", "not a number from 1 to 65535".into()),
        url::ParseError::RelativeUrlWithoutBase => fail(
            "scheme",
            format!(
                "missing (the DSN must start with redis://, rediss://, unix://, {CLUSTER}:// or {CLUSTER_TLS}://)"
            ),
        ),
        url::ParseError::EmptyHost => fail("host", "empty".into()),
        url::ParseError::InvalidIpv6Address | url::ParseError::InvalidIpv4Address => {
            fail("host", e.to_string())
        }
        other => fail("syntax", other.to_string()),
    })
}

/// The seed nodes of a cluster DSN (`rest` is what follows `://`): each
/// `host[:port]` of the comma-separated list is read as the one-server
/// form with the shared login, so it fails with the same messages. A
/// cluster has database 0 only, and nothing is read from a query.
fn cluster(
    scheme: &str,
    rest: &str,
    fail: &dyn Fn(&'static str, String) -> DsnError,
) -> Result<Vec<ConnectionInfo>, DsnError> {
    if rest.contains('#') {
        return Err(fail("fragment", "a `#...` part is not allowed".into()));
    }
    if rest.contains('?') {
        return Err(fail(
            "query",
            "a `?...` part is only read for unix:// DSNs".into(),
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !matches!(path, "" | "/" | "/0") {
        return Err(fail(
            "database",
            format!(
                "`{}` is not 0: a Redis Cluster has database 0 only",
                path.trim_start_matches('/')
            ),
        ));
    }
    let (login, hosts) = match authority.rsplit_once('@') {
        Some((login, hosts)) => (format!("{login}@"), hosts),
        None => (String::new(), authority),
    };
    if hosts.is_empty() {
        return Err(fail("host", "missing".into()));
    }
    let one = if scheme == CLUSTER_TLS {
        "rediss"
    } else {
        "redis"
    };
    hosts
        .split(',')
        .map(|host| {
            if host.is_empty() {
                return Err(fail(
                    "host",
                    "empty entry in the node list (write host:port,host:port)".into(),
                ));
            }
            tcp(&parse_url(&format!("{one}://{login}{host}"), fail)?, fail)
        })
        .collect()
}

fn decoded(
    raw: &str,
    part: &'static str,
    fail: &dyn Fn(&'static str, String) -> DsnError,
) -> Result<String, DsnError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| fail(part, "not valid UTF-8 after %-decoding".into()))
}

fn database(raw: &str, fail: &dyn Fn(&'static str, String) -> DsnError) -> Result<i64, DsnError> {
    raw.parse::<u32>().map(i64::from).map_err(|_| {
        fail(
            "database",
            format!("`{raw}` is not a database number (0, 1, 2, ...)"),
        )
    })
}

fn login(
    mut redis: RedisConnectionInfo,
    user: Option<String>,
    password: Option<String>,
) -> RedisConnectionInfo {
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        redis = redis.set_username(user);
    }
    if let Some(password) = password {
        redis = redis.set_password(password);
    }
    redis
}

fn tcp(
    url: &url::Url,
    fail: &dyn Fn(&'static str, String) -> DsnError,
) -> Result<ConnectionInfo, DsnError> {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err(fail("host", "missing".into())),
    };
    if host.is_empty() {
        return Err(fail("host", "empty".into()));
    }
    let port = url.port().unwrap_or(DEFAULT_PORT);
    if port == 0 {
        return Err(fail("port", "0 is not a port Redis can listen on".into()));
    }
    if url.query().is_some() {
        return Err(fail(
            "query",
            "a `?...` part is only read for unix:// DSNs".into(),
        ));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        raw if raw.contains('/') => {
            return Err(fail(
                "database",
                format!("`{raw}` is not a database number (0, 1, 2, ...)"),
            ))
        }
        raw => database(raw, fail)?,
    };
    let user = decoded(url.username(), "user", fail)?;
    let password = url
        .password()
        .map(|p| decoded(p, "password", fail))
        .transpose()?;
    let addr = if url.scheme() == "rediss" {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| fail("syntax", e.to_string()))?;
    let redis = login(
        RedisConnectionInfo::default().set_db(db),
        Some(user),
        password,
    );
    Ok(info.set_redis_settings(redis))
}

fn unix(
    url: &url::Url,
    fail: &dyn Fn(&'static str, String) -> DsnError,
) -> Result<ConnectionInfo, DsnError> {
    if url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(fail(
            "host",
            "a unix:// DSN has no host: write unix:///path/redis.sock (three slashes)".into(),
        ));
    }
    let path = decoded(url.path(), "path", fail)?;
    if path.is_empty() || path == "/" {
        return Err(fail("path", "missing the socket's path".into()));
    }
    let (mut db, mut user, mut password) = (0, None, None);
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "db" => db = database(&value, fail)?,
            "user" => user = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            other => {
                return Err(fail(
                    "query",
                    format!("unknown parameter `{other}` (allowed: db, user, password)"),
                ))
            }
        }
    }
    let info = ConnectionAddr::Unix(path.into())
        .into_connection_info()
        .map_err(|e| fail("syntax", e.to_string()))?;
    let redis = login(RedisConnectionInfo::default().set_db(db), user, password);
    Ok(info.set_redis_settings(redis))
}

/// The DSN with any password replaced by `***`, found without a full parse
/// so that even a DSN that does not parse is shown safely.
pub fn redact(dsn: &str) -> String {
    let mut shown = dsn.to_owned();
    let start = shown.find("://").map_or(0, |i| i + 3);
    // The last `@` before any query ends the user info, even when an
    // unencoded password holds a `/` or an `@`.
    let authority_end = shown[start..]
        .find(['?', '#'])
        .map_or(shown.len(), |i| start + i);
    if let Some(at) = shown[start..authority_end].rfind('@').map(|i| start + i) {
        if let Some(colon) = shown[start..at].find(':').map(|i| start + i) {
            shown.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(q) = shown.find('?') {
        let (head, query) = shown.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            // Any parameter that looks like a password, even a misspelt one.
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", masked.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(dsn: &str) -> DsnError {
        Dsn::parse(dsn).expect_err(dsn)
    }

    impl Dsn {
        fn connection_info(&self) -> ConnectionInfo {
            match &self.target {
                Target::One(info) => (**info).clone(),
                Target::Cluster(_) => panic!("{self:?} is a cluster DSN"),
            }
        }

        fn nodes(&self) -> Vec<ConnectionInfo> {
            match &self.target {
                Target::Cluster(nodes) => nodes.clone(),
                Target::One(_) => panic!("{self:?} is not a cluster DSN"),
            }
        }
    }

    #[test]
    fn tcp_forms_with_defaults() {
        let d = Dsn::parse("redis://10.0.0.5").unwrap();
        let info = d.connection_info();
        assert_eq!(
            info.addr(),
            &ConnectionAddr::Tcp("10.0.0.5".into(), DEFAULT_PORT)
        );
        assert_eq!(info.redis_settings().db(), 0);
        assert_eq!(info.redis_settings().password(), None);
        assert!(!d.is_tls());

        let d = Dsn::parse("redis://app:s%40cret@cache.local:6380/3").unwrap();
        let info = d.connection_info();
        assert_eq!(
            info.addr(),
            &ConnectionAddr::Tcp("cache.local".into(), 6380)
        );
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("s@cret"));
        assert_eq!(d.shown(), "redis://app:***@cache.local:6380/3");

        let d = Dsn::parse("redis://:secret@[::1]:7000/").unwrap();
        let info = d.connection_info();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("::1".into(), 7000));
        assert_eq!(info.redis_settings().username(), None);
        assert_eq!(info.redis_settings().password(), Some("secret"));
    }

    #[test]
    fn rediss_is_tls_and_unix_reads_its_query() {
        let d = Dsn::parse("rediss://:pw@redis.example:6390/1").unwrap();
        assert!(d.is_tls());
        assert!(matches!(
            d.connection_info().addr(),
            ConnectionAddr::TcpTls { host, port: 6390, insecure: false, .. } if host == "redis.example"
        ));

        let d = Dsn::parse("unix:///run/redis/redis.sock?db=2&password=pw").unwrap();
        let info = d.connection_info();
        assert_eq!(
            info.addr(),
            &ConnectionAddr::Unix("/run/redis/redis.sock".into())
        );
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(d.shown(), "unix:///run/redis/redis.sock?db=2&password=***");
    }

    #[test]
    fn cluster_forms_list_seed_nodes_with_one_login() {
        let d =
            Dsn::parse("redis+cluster://app:s%40cret@10.0.0.5:7000,10.0.0.6,[::1]:7002").unwrap();
        assert!(d.is_cluster() && !d.is_tls());
        assert_eq!(
            d.shown(),
            "redis+cluster://app:***@10.0.0.5:7000,10.0.0.6,[::1]:7002"
        );
        let nodes = d.nodes();
        let addrs: Vec<_> = nodes.iter().map(|n| n.addr().clone()).collect();
        assert_eq!(
            addrs,
            [
                ConnectionAddr::Tcp("10.0.0.5".into(), 7000),
                ConnectionAddr::Tcp("10.0.0.6".into(), DEFAULT_PORT),
                ConnectionAddr::Tcp("::1".into(), 7002),
            ]
        );
        for n in &nodes {
            assert_eq!(n.redis_settings().username(), Some("app"));
            assert_eq!(n.redis_settings().password(), Some("s@cret"));
            assert_eq!(n.redis_settings().db(), 0);
        }

        let d = Dsn::parse("REDISS+CLUSTER://:pw@cache.example:6390/0").unwrap();
        assert!(d.is_cluster() && d.is_tls());
        assert!(matches!(
            d.nodes()[0].addr(),
            ConnectionAddr::TcpTls { host, port: 6390, insecure: false, .. } if host == "cache.example"
        ));
        assert!(!Dsn::parse("redis://h").unwrap().is_cluster());
    }

    #[test]
    fn each_mistake_names_its_part_and_never_the_password() {
        let cases = [
            ("http://:hunter2@host:6379", "scheme"),
            ("localhost:6379", "scheme"),
            ("redis://:hunter2@host:99999", "port"),
            ("redis://:hunter2@host:0", "port"),
            ("redis://:hunter2@host:6379/x", "database"),
            ("redis://:hunter2@host:6379/1/2", "database"),
            ("redis://:hunter2@host:6379/-1", "database"),
            ("redis://:hunter2@host?timeout=1", "query"),
            ("redis://:hunter2@host#frag", "fragment"),
            ("redis://:hunter2@", "host"),
            ("unix://host/run/redis.sock", "host"),
            ("unix://", "path"),
            ("unix:///run/redis.sock?db=z&password=hunter2", "database"),
            ("unix:///run/redis.sock?pass=hunter2", "query"),
            ("redis+cluster://:hunter2@", "host"),
            ("redis+cluster://:hunter2@h1:7000,,h2:7001", "host"),
            ("redis+cluster://:hunter2@h1:7000,", "host"),
            ("redis+cluster://:hunter2@h1:7000,h2:x", "port"),
            ("redis+cluster://:hunter2@h1:7000,h2:70000", "port"),
            ("rediss+cluster://:hunter2@h1:0", "port"),
            ("redis+cluster://:hunter2@h1:7000/1", "database"),
            ("redis+cluster://:hunter2@h1:7000,h2:7001/x", "database"),
            ("redis+cluster://:hunter2@h1:7000?db=0", "query"),
            ("redis+cluster://:hunter2@h1:7000#x", "fragment"),
            ("redis+cluster://:hunter2@[::1:7000", "host"),
            ("redis+sentinel://:hunter2@h1:7000", "scheme"),
        ];
        for (dsn, part) in cases {
            let e = err(dsn);
            assert_eq!(e.part, part, "{dsn}: {e}");
            let message = e.to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("expected redis://"), "{message}");
        }
    }

    #[test]
    fn redaction_covers_users_and_unparsable_dsns() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://u@h"), "redis://u@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://:p@ss@h"), "redis://:***@h");
        assert_eq!(redact("u:pw@host:6379"), "u:***@host:6379");
        assert_eq!(redact("redis://:a/b@h/0"), "redis://:***@h/0");
    }
}
