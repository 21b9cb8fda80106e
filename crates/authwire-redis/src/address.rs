//! Where the store's Redis is: one server, a cluster, or a master behind Sentinel, and the URL
//! forms that name each (for the CLI's and the proxy's `--redis-url`).

use authwire::StoreError;

use crate::RedisStoreError;

/// The Redis deployment a store talks to; each URL is a `redis://` or `rediss://` URL.
#[derive(Clone)]
pub(crate) enum Topology {
    Single(String),
    Cluster(Vec<String>),
    Sentinel { sentinels: Vec<String>, master: String },
}

impl Topology {
    /// Every URL the store connects to first (seed nodes, sentinels, or the one server).
    pub(crate) fn urls(&self) -> &[String] {
        match self {
            Topology::Single(url) => std::slice::from_ref(url),
            Topology::Cluster(nodes) => nodes,
            Topology::Sentinel { sentinels, .. } => sentinels,
        }
    }

    /// The deployment for logs and errors, without passwords.
    pub(crate) fn display(&self) -> String {
        let urls = self
            .urls()
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            Topology::Single(_) => urls,
            Topology::Cluster(_) => format!("the Redis Cluster at {urls}"),
            Topology::Sentinel { master, .. } => format!("the master {master:?} of the sentinels {urls}"),
        }
    }
}

/// Read a store URL:
/// - `redis://host:port/db`, `rediss://…`, `redis+unix:///path`: one server;
/// - `redis+cluster://[user:password@]host:port,host:port/` (or `rediss+cluster://`): a Redis
///   Cluster, from any of its nodes;
/// - `redis+sentinel://[user:password@]host:port,host:port/master-name` (or
///   `rediss+sentinel://`): the master that the sentinels name; the credentials are used for the
///   sentinels and for the master.
pub(crate) fn parse(url: &str) -> Result<Topology, StoreError> {
    let refuse = |why: &str| {
        Err(StoreError::new(RedisStoreError(format!(
            "{}: {why}",
            redact_multi(url)
        ))))
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return refuse("not a URL (expected redis://, rediss://, redis+cluster:// or redis+sentinel://)");
    };
    let (base, kind) = match scheme.to_ascii_lowercase().as_str() {
        "redis+cluster" => ("redis", "cluster"),
        "rediss+cluster" => ("rediss", "cluster"),
        "redis+sentinel" => ("redis", "sentinel"),
        "rediss+sentinel" => ("rediss", "sentinel"),
        _ => return Ok(Topology::Single(url.to_owned())),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut urls = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return refuse("a host is missing between commas");
        }
        let node = match userinfo {
            Some(userinfo) => format!("{base}://{userinfo}@{host}/"),
            None => format!("{base}://{host}/"),
        };
        if url::Url::parse(&node).is_err() {
            return refuse("a host in the list is not host:port");
        }
        urls.push(node);
    }
    match kind {
        "cluster" if path.is_empty() => Ok(Topology::Cluster(urls)),
        "cluster" => refuse("a cluster URL has no path (a cluster has only database 0)"),
        _ if path.is_empty() || path.contains('/') => refuse(
            "a sentinel URL ends with the master's name: redis+sentinel://host:26379,host:26380/mymaster",
        ),
        _ => Ok(Topology::Sentinel {
            sentinels: urls,
            master: path.to_owned(),
        }),
    }
}

/// The URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid redis url>".into(),
    }
}

/// A URL that may list several hosts, without its password.
fn redact_multi(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid redis url>".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:redacted@{hosts}"),
            None => format!("{scheme}://{userinfo}@{hosts}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(url: &str) -> String {
        match parse(url) {
            Err(e) => authwire::error_chain(&e).to_string(),
            Ok(_) => panic!("{url} was accepted"),
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:hunter2@cache:6379/0"),
            "redis://:redacted@cache:6379/0"
        );
        assert_eq!(
            redact("rediss://user:hunter2@cache/"),
            "rediss://user:redacted@cache/"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact("::"), "<invalid redis url>");
        let e = error("redis+sentinel://:hunter2@a:1,,b:2/m");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("redis+sentinel://:redacted@a:1,,b:2/m"), "{e}");
        let t = parse("redis+cluster://app:hunter2@a:1,b:2").unwrap();
        assert!(!t.display().contains("hunter2"), "{}", t.display());
    }

    #[test]
    fn cluster_urls_list_their_nodes() {
        let Topology::Cluster(nodes) = parse("rediss+cluster://app:pw@10.0.0.1:7000,[::1]:7001/").unwrap()
        else {
            panic!("not a cluster");
        };
        assert_eq!(
            nodes,
            ["rediss://app:pw@10.0.0.1:7000/", "rediss://app:pw@[::1]:7001/"]
        );
        assert!(error("redis+cluster://a:1/0").contains("no path"));
        assert!(error("redis+cluster://a:1,:x/").contains("not host:port"));
    }

    #[test]
    fn sentinel_urls_name_their_master() {
        let Topology::Sentinel { sentinels, master } =
            parse("redis+sentinel://s1:26379,s2:26380/mymaster").unwrap()
        else {
            panic!("not sentinel");
        };
        assert_eq!(sentinels, ["redis://s1:26379/", "redis://s2:26380/"]);
        assert_eq!(master, "mymaster");
        assert!(error("redis+sentinel://s1:26379").contains("ends with the master's name"));
        assert!(error("redis+sentinel://s1:26379/a/b").contains("ends with the master's name"));
    }

    #[test]
    fn other_urls_are_one_server() {
        assert!(
            matches!(parse("redis://127.0.0.1:6379/2").unwrap(), Topology::Single(u) if u == "redis://127.0.0.1:6379/2")
        );
        assert!(error("cache:6379").contains("not a URL"));
    }
}
