//! Connection and tracking settings, as the host hands them over.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: `redis://`, `rediss://` or `unix://`.
    Url(String),
    /// Seed nodes of a Redis Cluster, as `host:port` or URLs.
    Cluster(Vec<String>),
    /// Sentinels (`host:port` or URLs) watching `master_name`.
    Sentinel {
        /// The sentinels to ask.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
        /// The sentinels' own password, when they have one.
        sentinel_password: Option<String>,
    },
}

/// TLS material, as paths to PEM files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// Trust this CA instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key, for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Skip certificate and host name checks (tests only).
    pub insecure: bool,
}

/// Everything the core needs to reach Redis and track syncs.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Where Redis is.
    pub topology: Topology,
    /// ACL user.
    pub username: Option<String>,
    /// Password; never printed.
    pub password: Option<String>,
    /// Database number, for single servers and Sentinel.
    pub db: Option<i64>,
    /// TLS settings; `rediss://` turns TLS on without them.
    pub tls: Option<Tls>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one reply may take.
    pub read_timeout: Duration,
    /// How long a sync marker lives without its finish.
    pub marker_ttl: Duration,
    /// How long kept resets live; longer than `marker_ttl`.
    pub pending_ttl: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            topology: Topology::Url("redis://127.0.0.1:6379/0".into()),
            username: None,
            password: None,
            db: None,
            tls: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            marker_ttl: Duration::from_secs(300),
            pending_ttl: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// Rejects settings that cannot work, before any connection is tried.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::Config(format!("{name} must be greater than zero")))
            } else {
                Ok(())
            }
        };
        positive("connect_timeout", self.connect_timeout)?;
        positive("read_timeout", self.read_timeout)?;
        positive("marker_ttl", self.marker_ttl)?;
        if self.pending_ttl <= self.marker_ttl {
            return Err(Error::Config(
                "pending_ttl must be longer than marker_ttl, or a crashed sync would \
                 take its kept resets with it"
                    .into(),
            ));
        }
        match &self.topology {
            Topology::Url(url) if url.is_empty() => Err(Error::Config("redis_url is empty".into())),
            Topology::Cluster(nodes) if nodes.is_empty() => {
                Err(Error::Config("cluster needs at least one node".into()))
            }
            Topology::Sentinel {
                sentinels,
                master_name,
                ..
            } if sentinels.is_empty() || master_name.is_empty() => Err(Error::Config(
                "sentinel needs at least one sentinel and a master name".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Hides the password inside a URL: `redis://:secret@host` becomes `redis://:***@host`.
pub fn redact_url(url: &str) -> String {
    // Everything between "://" and the last '@' is user information: the
    // password may itself hold '/', ':' or '@', so the last '@' ends it.
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &rest[at..])
        }
        None => url.to_string(),
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Url(url) => write!(f, "Url({})", redact_url(url)),
            Topology::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                write!(f, "Cluster({nodes:?})")
            }
            Topology::Sentinel {
                sentinels,
                master_name,
                sentinel_password,
            } => write!(
                f,
                "Sentinel({:?}, {master_name:?}, password: {})",
                sentinels.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
                if sentinel_password.is_some() {
                    "***"
                } else {
                    "none"
                }
            ),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("topology", &self.topology)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("marker_ttl", &self.marker_ttl)
            .field("pending_ttl", &self.pending_ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_debug_output() {
        let config = Config {
            topology: Topology::Url("redis://user:hunter2@10.0.0.1:6379/0".into()),
            password: Some("hunter3".into()),
            ..Config::default()
        };
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
        assert!(text.contains("user:***@10.0.0.1"), "{text}");
    }

    #[test]
    fn pending_resets_must_outlive_markers() {
        let config = Config {
            pending_ttl: Duration::from_secs(300),
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(Error::Config(_))));
        assert!(Config::default().validate().is_ok());
    }
}
