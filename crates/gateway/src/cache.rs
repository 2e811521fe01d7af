//! Redis, treated as a cache: every operation is bounded in time and its failure is an ordinary
//! error the caller degrades around, never a reason to stop serving.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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

/// A shared, reconnecting Redis connection and the key prefix of this deployment.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    prefix: String,
}

impl Cache {
    /// Connects lazily: the gateway starts even when Redis is down, and reconnects by itself.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("malformed setting REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(300)))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// `prefix + name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// Runs `cmd` with the operation timeout.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CacheError::Timeout(OP_TIMEOUT)),
        }
    }

    /// Runs a Lua script with the operation timeout.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(*a);
        }
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async(&mut conn)).await {
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
