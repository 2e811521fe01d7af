//! Redis, treated as a cache: every operation is bounded in time and its failure is an ordinary
//! error the caller degrades around, never a reason to stop serving.

use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// How long one Redis operation may take before the caller falls back.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a Redis operation gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// What `REDIS_URL` names: one Redis (`redis://…`, `rediss://…`), or a Redis Cluster given by
/// seed nodes, `redis+cluster://[user:password@]host1:6379[,host2:6379…]`. One seed is enough (a
/// managed cluster's configuration endpoint); the client learns the other nodes and follows
/// MOVED/ASK redirections. `rediss://` and `rediss+cluster://` parse, but are refused at start-up
/// with a clear line: this build has no Redis TLS support (the `redis` crate's TLS feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server.
    Single(String),
    /// Seed node URLs of a cluster, each `redis://[user:password@]host:port`.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parses and checks `REDIS_URL`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let cluster = |rest: &str, scheme: &str| -> anyhow::Result<Self> {
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
            if hosts.contains(['/', '?', '#']) {
                anyhow::bail!("a cluster URL has no database or options (a cluster has only db 0)");
            }
            let nodes = hosts
                .split(',')
                .map(|h| {
                    let h = h.trim();
                    if h.is_empty() {
                        anyhow::bail!("empty node in the cluster URL");
                    }
                    let node = format!("{scheme}://{userinfo}{h}");
                    node.as_str()
                        .into_connection_info()
                        .map_err(|e| anyhow::anyhow!("cluster node {h}: {e}"))?;
                    Ok(node)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Self::Cluster(nodes))
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            cluster(rest, "redis")
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            cluster(rest, "rediss")
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            url.into_connection_info()?;
            Ok(Self::Single(url.to_owned()))
        } else {
            anyhow::bail!(
                "expected redis://host:port, rediss://…, or redis+cluster://host1:port,host2:port"
            )
        }
    }
}

/// The connection: a single instance's manager, or a cluster connection made on first use.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// A cluster connection, made on first use (the gateway starts while Redis is down) and again
/// after a failed attempt; once made, it reconnects to nodes and follows the topology itself.
struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// A shared, reconnecting Redis connection and the key prefix of this deployment.
#[derive(Clone)]
pub struct Cache {
    conn: Conn,
    prefix: String,
}

/// Commands share one multiplexed connection: without `TCP_NODELAY` a command written while
/// another's answer is outstanding waits for that answer's ACK (Nagle's algorithm).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn malformed_url(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("malformed setting REDIS_URL: {e}")
}

impl Cache {
    /// Connects lazily: the gateway starts even when Redis is down, and reconnects by itself.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let target = RedisTarget::parse(url).map_err(malformed_url)?;
        let conn = match target {
            RedisTarget::Single(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(malformed_url)?
                    .set_tcp_settings(tcp_settings());
                let client = redis::Client::open(info).map_err(malformed_url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(300)))
                    .set_response_timeout(Some(OP_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100));
                Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_millis(300))
                    .response_timeout(OP_TIMEOUT)
                    .retries(1)
                    .tcp_settings(tcp_settings())
                    .build()
                    .map_err(malformed_url)?;
                Conn::Cluster(Arc::new(LazyCluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                }))
            }
        };
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Whether this cache talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Runs `cmd` with the operation timeout.
    #[tracing::instrument(name = "redis", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let run = async {
            match &self.conn {
                Conn::Single(conn) => cmd.query_async(&mut conn.clone()).await,
                Conn::Cluster(lazy) => cmd.query_async(&mut lazy.connection().await?).await,
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, run).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(OP_TIMEOUT)),
        }
    }

    /// Runs a Lua script with the operation timeout.
    #[tracing::instrument(name = "redis", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, CacheError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(*a);
        }
        // On a cluster, EVALSHA goes to the slot of the first key: a script's keys must share a
        // slot (each script of this crate uses one key).
        let run = async {
            match &self.conn {
                Conn::Single(conn) => invocation.invoke_async(&mut conn.clone()).await,
                Conn::Cluster(lazy) => invocation.invoke_async(&mut lazy.connection().await?).await,
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, run).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(OP_TIMEOUT)),
        }
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected PING answer",
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_is_one_instance() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/2".into())
        );
        assert!(matches!(
            RedisTarget::parse("redis://user:pw@cache.example:6380").unwrap(),
            RedisTarget::Single(_)
        ));
    }

    #[test]
    fn tls_is_refused_at_start_up_while_the_redis_tls_feature_is_not_built_in() {
        for url in [
            "rediss://cache.example:6380",
            "rediss+cluster://clustercfg.example.com:6379",
        ] {
            let e = RedisTarget::parse(url).unwrap_err().to_string();
            assert!(e.contains("TLS"), "{url}: {e}");
        }
    }

    #[test]
    fn a_cluster_url_lists_its_seed_nodes_with_the_credentials() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:p@10.0.0.1:7000".into(),
                "redis://u:p@10.0.0.2:7001".into(),
            ])
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://clustercfg.example.com:6379").unwrap(),
            RedisTarget::Cluster(vec!["redis://clustercfg.example.com:6379".into()])
        );
    }

    #[test]
    fn malformed_urls_are_refused() {
        for url in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1,b:2/3",
            "redis+cluster://a:notaport",
        ] {
            assert!(RedisTarget::parse(url).is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn the_cache_picks_its_connection_kind_without_connecting() {
        assert!(
            !Cache::new("redis://127.0.0.1:1", "p:")
                .unwrap()
                .is_cluster()
        );
        let cluster = Cache::new("redis+cluster://127.0.0.1:1,127.0.0.1:2", "p:").unwrap();
        assert!(cluster.is_cluster());
        // Nothing listens there: an ordinary, bounded error, then a new attempt next time.
        assert!(cluster.ping().await.is_err());
        assert!(cluster.ping().await.is_err());
    }
}
